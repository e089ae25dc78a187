# anchor/: the Merkle log and anchoring service, and the development ledger.
add_executable(tagproof-anchor ${CMAKE_CURRENT_LIST_DIR}/main.c)
target_link_libraries(tagproof-anchor PRIVATE tagproof_lib_all)
add_executable(tagproof-devledger ${CMAKE_CURRENT_LIST_DIR}/devledger.c)
target_link_libraries(tagproof-devledger PRIVATE tagproof_lib_all)
