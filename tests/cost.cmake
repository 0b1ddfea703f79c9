# Read by CTest after the integration tests' discovery scripts (tests/CMakeLists.txt): the tests
# that take 30-55 s each (the chaos seeds, the replicas' kill and rolling-restart tests) are
# started first. Without this a run that has no CTestCostData yet (a clean clone: CI, and the
# ThreadSanitizer run) starts them last, in declaration order, and the whole run waits on them
# at the end.
foreach(list segue_integration_tests_main segue_integration_tests_replicas segue_integration_tests_pg)
  foreach(name IN LISTS ${list})
    if(name MATCHES "Chaos\\.KillsAndFaultsLoseNothing|^Replicas\\.(KillsAndFaults|RollingRestart)")
      set_tests_properties("${name}" PROPERTIES COST 1000)
    endif()
    # The flood saturates both cores by itself, and a drain has one window no server closes (a
    # connection the kernel completes between the drain's last accept and the listener's
    # close is reset): beside other tests' load that window widened enough to cost a request
    # (1 run in 3 with two busy loops beside it). Alone, it has not.
    if(name MATCHES "^Replicas\\.DrainsUnderAFloodOfKeylessPostsFailAtMostOne$")
      set_tests_properties("${name}" PROPERTIES RUN_SERIAL TRUE)
    endif()
  endforeach()
endforeach()
