# libtagproof is built from one object library per shared/ module. Each unit or integration
# test links only the objects of the module it tests and of that module's internal
# dependencies, which keeps module boundaries honest and test links fast.

set(TAGPROOF_MODULES "")

# tp_module(NAME [DIR folder] [SOURCES extra.c ...] [DEPS internal modules ...]
#           [LIBS external targets ...])
# A module is DIR/NAME.c with DIR/NAME.h; DIR is shared (libtagproof) unless a program's own
# folder is named, in which case the module is linked into that program only.
function(tp_module name)
  cmake_parse_arguments(M "" "DIR" "SOURCES;DEPS;LIBS" ${ARGN})
  if(NOT M_DIR)
    set(M_DIR shared)
  endif()
  # A module still being written has no source yet; the programs that need it fail to link,
  # which is the right place to notice.
  if(NOT EXISTS ${CMAKE_SOURCE_DIR}/${M_DIR}/${name}.c)
    message(STATUS "module ${name}: ${M_DIR}/${name}.c not present, skipped")
    return()
  endif()
  add_library(tpo_${name} OBJECT ${CMAKE_SOURCE_DIR}/${M_DIR}/${name}.c ${M_SOURCES})
  target_include_directories(tpo_${name} PUBLIC ${CMAKE_SOURCE_DIR}/${M_DIR}
                                                ${CMAKE_SOURCE_DIR}/shared)
  target_link_libraries(tpo_${name} PUBLIC ${M_LIBS} Threads::Threads)
  foreach(d IN LISTS M_DEPS)
    target_link_libraries(tpo_${name} PUBLIC tpo_${d})
  endforeach()
  set_property(GLOBAL PROPERTY TP_DEPS_${name} "${M_DEPS}")
  set_property(GLOBAL APPEND PROPERTY TP_MODULES ${name})
  if(M_DIR STREQUAL "shared")
    set_property(GLOBAL APPEND PROPERTY TP_SHARED_MODULES ${name})
  else()
    set_property(GLOBAL APPEND PROPERTY TP_PROGRAM_MODULES_${M_DIR} ${name})
  endif()
endfunction()

# The objects of a program folder's own modules, for add_executable.
function(tp_program_objects dir out)
  get_property(mods GLOBAL PROPERTY TP_PROGRAM_MODULES_${dir})
  set(result "")
  foreach(m IN LISTS mods)
    list(APPEND result $<TARGET_OBJECTS:tpo_${m}>)
  endforeach()
  set(${out} ${result} PARENT_SCOPE)
endfunction()

# The objects of a module and, transitively, of everything it depends on.
function(tp_module_objects name out)
  set(result "")
  set(todo ${name})
  set(seen "")
  while(todo)
    list(POP_FRONT todo m)
    if(m IN_LIST seen)
      continue()
    endif()
    list(APPEND seen ${m})
    list(APPEND result $<TARGET_OBJECTS:tpo_${m}>)
    get_property(deps GLOBAL PROPERTY TP_DEPS_${m})
    list(APPEND todo ${deps})
  endwhile()
  set(${out} ${result} PARENT_SCOPE)
endfunction()

include(${CMAKE_SOURCE_DIR}/shared/modules.cmake)
foreach(dir scan factory-api anchor)
  if(EXISTS ${CMAKE_SOURCE_DIR}/${dir}/modules.cmake)
    include(${CMAKE_SOURCE_DIR}/${dir}/modules.cmake)
  endif()
endforeach()

get_property(all_modules GLOBAL PROPERTY TP_MODULES)
get_property(shared_modules GLOBAL PROPERTY TP_SHARED_MODULES)
set(all_objects "")
set(all_targets "")
foreach(m IN LISTS shared_modules)
  list(APPEND all_objects $<TARGET_OBJECTS:tpo_${m}>)
  list(APPEND all_targets tpo_${m})
endforeach()
# The library's file is libtagproof.a; its target is tagproof_lib_all because the CLI
# program owns the name "tagproof".
add_library(tagproof_lib_all STATIC ${all_objects})
set_target_properties(tagproof_lib_all PROPERTIES OUTPUT_NAME tagproof
                                                  ARCHIVE_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/lib)
target_link_libraries(tagproof_lib_all PUBLIC ${all_targets})

# Programs.
foreach(dir scan factory-api anchor)
  if(EXISTS ${CMAKE_SOURCE_DIR}/${dir}/programs.cmake)
    include(${CMAKE_SOURCE_DIR}/${dir}/programs.cmake)
  endif()
endforeach()

# Tests: tests/<tier>/test_<module>[_topic].c links the objects of <dir>/<module>.c and its
# dependencies (or the whole library when no such module exists), the common test support,
# and tests/support/<module>_support.c when present.
enable_testing()
add_library(tp_testsupport STATIC ${CMAKE_SOURCE_DIR}/tests/support/support.c)
target_include_directories(tp_testsupport PUBLIC ${CMAKE_SOURCE_DIR}/tests/support
                                                 ${CMAKE_SOURCE_DIR}/shared)
target_link_libraries(tp_testsupport PUBLIC PkgConfig::CMOCKA Threads::Threads)
target_compile_definitions(tp_testsupport PUBLIC TAGPROOF_SOURCE_DIR="${CMAKE_SOURCE_DIR}"
                                                 TAGPROOF_BINARY_DIR="${CMAKE_BINARY_DIR}")

foreach(tier unit integration)
  file(GLOB tests CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/${tier}/test_*.c)
  foreach(src IN LISTS tests)
    get_filename_component(tname ${src} NAME_WE)
    string(REGEX REPLACE "^test_([a-z0-9]+).*$" "\\1" module ${tname})
    set(extra "")
    if(EXISTS ${CMAKE_SOURCE_DIR}/tests/support/${module}_support.c)
      list(APPEND extra ${CMAKE_SOURCE_DIR}/tests/support/${module}_support.c)
    endif()
    if(module IN_LIST all_modules)
      tp_module_objects(${module} objs)
      add_executable(${tname} ${src} ${extra} ${objs})
      target_link_libraries(${tname} PRIVATE tpo_${module} tp_testsupport)
    else()
      add_executable(${tname} ${src} ${extra})
      target_link_libraries(${tname} PRIVATE tagproof_lib_all tp_testsupport)
    endif()
    set_target_properties(${tname} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
    add_test(NAME ${tier}_${tname} COMMAND ${tname})
    set_tests_properties(${tier}_${tname} PROPERTIES LABELS ${tier} TIMEOUT 300)
    # Tests that stop and restart servers say so with a RESOURCE_LOCK line in their source.
    file(STRINGS ${src} locks REGEX "^// ctest: RESOURCE_LOCK ")
    if(locks)
      string(REGEX REPLACE "^// ctest: RESOURCE_LOCK " "" lock "${locks}")
      set_tests_properties(${tier}_${tname} PROPERTIES RESOURCE_LOCK "${lock}")
    endif()
  endforeach()
endforeach()

if(EXISTS ${CMAKE_SOURCE_DIR}/tests/tests.cmake)
  include(${CMAKE_SOURCE_DIR}/tests/tests.cmake)
endif()
