# factory-api/: the factory API server (its own modules from factory-api/modules.cmake, and
# one handler file per group of routes) and the tagproof command-line client.
tp_program_objects(factory-api factory_objects)
# The client's modules (requests to the API, progress bars) are the command line's alone.
set(cli_objects ${factory_objects})
list(FILTER factory_objects EXCLUDE REGEX "tpo_(client|progress)>")
add_executable(tagproof-factory
  ${CMAKE_CURRENT_LIST_DIR}/main.c ${CMAKE_CURRENT_LIST_DIR}/tenants.c
  ${CMAKE_CURRENT_LIST_DIR}/catalog.c ${CMAKE_CURRENT_LIST_DIR}/upload.c ${factory_objects})
target_include_directories(tagproof-factory PRIVATE ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(tagproof-factory PRIVATE tagproof_lib_all)
add_executable(tagproof ${CMAKE_CURRENT_LIST_DIR}/cli.c ${CMAKE_CURRENT_LIST_DIR}/cli_merkle.c
                        ${CMAKE_CURRENT_LIST_DIR}/cli_upload.c ${cli_objects})
target_include_directories(tagproof PRIVATE ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(tagproof PRIVATE tagproof_lib_all)
target_sources(tagproof-factory PRIVATE ${CMAKE_CURRENT_LIST_DIR}/proofs.c)
target_sources(tagproof PRIVATE ${CMAKE_CURRENT_LIST_DIR}/cli_verify.c)
