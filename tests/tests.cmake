# End-to-end tests: shell scripts in tests/e2e/ that drive the real programs against the
# PostgreSQL and Redis that scripts/test starts.
file(GLOB e2e_tests CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/e2e/test_*.sh)
foreach(script IN LISTS e2e_tests)
  get_filename_component(tname ${script} NAME_WE)
  add_test(NAME e2e_${tname} COMMAND bash ${script})
  set_tests_properties(e2e_${tname} PROPERTIES LABELS e2e TIMEOUT 600)
endforeach()

# The consumer page's five states rendered by headless Chromium, checked by the words shown.
if(TARGET test_page)
  add_test(NAME browser_page_states
           COMMAND bash ${CMAKE_SOURCE_DIR}/tests/browser/check_states.sh $<TARGET_FILE:test_page>)
  set_tests_properties(browser_page_states PROPERTIES LABELS browser TIMEOUT 300)
endif()

# test_answer checks scan/answer against jansson, which the module itself does not use.
if(TARGET test_answer)
  target_link_libraries(test_answer PRIVATE PkgConfig::JANSSON)
endif()

# The API contract (docs/ARCHITECTURE.md, "API contract"): docs/openapi.yaml linted, the
# contract check shown to catch what it should, and the factory API walked through Prism.
add_test(NAME openapi_lint COMMAND bash ${CMAKE_SOURCE_DIR}/tests/openapi/lint.sh)
set_tests_properties(openapi_lint PROPERTIES LABELS openapi TIMEOUT 120)
file(GLOB openapi_tests CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/openapi/test_*.sh)
foreach(script IN LISTS openapi_tests)
  get_filename_component(tname ${script} NAME_WE)
  add_test(NAME openapi_${tname} COMMAND bash ${script})
  set_tests_properties(openapi_${tname} PROPERTIES LABELS "openapi;e2e" TIMEOUT 300)
endforeach()

# tagproof-mklog (tests/verifier/mklog.c): a signed Merkle log built in a test database as the
# anchor service would build it, for the proof tests and scripts/bench/proofs.
add_executable(tagproof-mklog ${CMAKE_SOURCE_DIR}/tests/verifier/mklog.c)
target_link_libraries(tagproof-mklog PRIVATE tagproof_lib_all)
set_target_properties(tagproof-mklog PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
# test_proof_nodes runs PROOF_NODES_SQL itself; the proof module does not use libpq.
if(TARGET test_proof_nodes)
  target_link_libraries(test_proof_nodes PRIVATE PkgConfig::LIBPQ)
endif()
