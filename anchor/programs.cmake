# anchor/: the Merkle log and anchoring service, and the development ledger.
tp_program_objects(anchor anchor_objects)
add_executable(tagproof-anchor ${CMAKE_CURRENT_LIST_DIR}/main.c ${anchor_objects})
target_include_directories(tagproof-anchor PRIVATE ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(tagproof-anchor PRIVATE tagproof_lib_all PkgConfig::LIBPQ PkgConfig::LIBCURL
                                              PkgConfig::JANSSON)
add_executable(tagproof-devledger ${CMAKE_CURRENT_LIST_DIR}/devledger.c)
target_link_libraries(tagproof-devledger PRIVATE tagproof_lib_all)
