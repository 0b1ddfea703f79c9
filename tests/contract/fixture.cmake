# Read by CTest after the integration tests' discovery scripts (tests/CMakeLists.txt): every
# integration test requires the fixture contract_log besides test_pg, so contract.reset runs before
# the first of them and contract.validate after the last.
foreach(list segue_integration_tests_main segue_integration_tests_replicas segue_integration_tests_pg)
  if(${list})
    set_tests_properties(${${list}} PROPERTIES FIXTURES_REQUIRED "test_pg;contract_log")
  endif()
endforeach()
