# libFuzzer targets (SPEC §10), built when TAGPROOF_FUZZ is ON, with clang only.
#
# tests/fuzz/fuzz_<name>.c becomes the executable fuzz_<name>. Its first line, of the form
#     // fuzz: MODULES a b ...
# names the modules it exercises; they and their dependencies are compiled once more, into
# object libraries tpf_<module>, with coverage instrumentation (-fsanitize=fuzzer-no-link),
# so that the normal tpo_<module> objects stay as they are. scripts/fuzz builds and runs them.
#
# The setup runs deferred, at the end of the top-level directory, so this file may be included
# anywhere in CMakeLists.txt: it needs the modules that cmake/modules.cmake declares.

include_guard(GLOBAL)

if(NOT TAGPROOF_FUZZ)
  return()
endif()
if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "TAGPROOF_FUZZ needs clang (configure with CC=clang)")
endif()

set(TP_FUZZ_SANITIZERS -fsanitize=address,undefined -fno-sanitize-recover=undefined
                       -fno-omit-frame-pointer)

# tpf_<module>: the module's sources again, instrumented for coverage, with the same include
# directories and external libraries as tpo_<module>. Returns the closure's targets in out.
function(tp_fuzz_module_targets module out)
  set(result "")
  set(todo ${module})
  set(seen "")
  while(todo)
    list(POP_FRONT todo m)
    if(m IN_LIST seen)
      continue()
    endif()
    list(APPEND seen ${m})
    if(NOT TARGET tpo_${m})
      message(FATAL_ERROR "fuzz: no module ${m} (is its source present?)")
    endif()
    if(NOT TARGET tpf_${m})
      get_target_property(srcs tpo_${m} SOURCES)
      get_target_property(incs tpo_${m} INCLUDE_DIRECTORIES)
      get_target_property(libs tpo_${m} LINK_LIBRARIES)
      add_library(tpf_${m} OBJECT ${srcs})
      target_include_directories(tpf_${m} PUBLIC ${incs})
      foreach(l IN LISTS libs)
        # Internal dependencies are linked as their own tpf_ objects by the executable.
        if(NOT l MATCHES "^tpo_")
          target_link_libraries(tpf_${m} PUBLIC ${l})
        endif()
      endforeach()
      target_compile_options(tpf_${m} PRIVATE -fsanitize=fuzzer-no-link ${TP_FUZZ_SANITIZERS})
    endif()
    list(APPEND result tpf_${m})
    get_property(deps GLOBAL PROPERTY TP_DEPS_${m})
    list(APPEND todo ${deps})
  endwhile()
  set(${out} ${result} PARENT_SCOPE)
endfunction()

function(tp_fuzz_setup)
  file(GLOB fuzzers CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz_*.c)
  set(names "")
  foreach(src IN LISTS fuzzers)
    get_filename_component(fname ${src} NAME_WE)
    file(STRINGS ${src} decl REGEX "^// fuzz: MODULES " LIMIT_COUNT 1)
    if(NOT decl)
      message(FATAL_ERROR "${src}: no \"// fuzz: MODULES ...\" line")
    endif()
    string(REGEX REPLACE "^// fuzz: MODULES " "" modules "${decl}")
    separate_arguments(modules)
    set(targets "")
    foreach(m IN LISTS modules)
      tp_fuzz_module_targets(${m} t)
      list(APPEND targets ${t})
    endforeach()
    list(REMOVE_DUPLICATES targets)
    add_executable(${fname} ${src})
    # Linking an object library directly puts its objects into the executable.
    target_link_libraries(${fname} PRIVATE ${targets})
    target_compile_options(${fname} PRIVATE -fsanitize=fuzzer ${TP_FUZZ_SANITIZERS})
    target_link_options(${fname} PRIVATE -fsanitize=fuzzer ${TP_FUZZ_SANITIZERS})
    set_target_properties(${fname} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/fuzz)
    list(APPEND names ${fname})
  endforeach()
  # One target that builds every fuzzer: `cmake --build <dir> --target fuzzers`.
  add_custom_target(fuzzers DEPENDS ${names})
endfunction()

cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR} CALL tp_fuzz_setup)
