# scan/: the public scan API.
add_executable(tagproof-scan ${CMAKE_CURRENT_LIST_DIR}/main.c)
target_link_libraries(tagproof-scan PRIVATE tagproof_lib_all)
