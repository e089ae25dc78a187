# factory-api/: the factory API server and the tagproof command-line client.
add_executable(tagproof-factory ${CMAKE_CURRENT_LIST_DIR}/main.c)
target_link_libraries(tagproof-factory PRIVATE tagproof_lib_all)
add_executable(tagproof ${CMAKE_CURRENT_LIST_DIR}/cli.c)
target_link_libraries(tagproof PRIVATE tagproof_lib_all)
