# scan/: the public scan API, with its own modules (scan/modules.cmake) linked in.
tp_program_objects(scan scan_objects)
add_executable(tagproof-scan ${CMAKE_CURRENT_LIST_DIR}/main.c ${CMAKE_CURRENT_LIST_DIR}/scan.c
                             ${scan_objects})
target_include_directories(tagproof-scan PRIVATE ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(tagproof-scan PRIVATE tagproof_lib_all m)
