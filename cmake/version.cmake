# Run at every build (target segue_version): writes version.hpp with the current git revision.
# configure_file leaves the file alone when nothing changed, so nothing is rebuilt needlessly.
if(NOT REVISION)
  execute_process(COMMAND git rev-parse --short=12 HEAD
    WORKING_DIRECTORY ${SRC} OUTPUT_VARIABLE REVISION
    OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
endif()
if(NOT REVISION)
  set(REVISION unknown)
endif()
set(PROJECT_VERSION ${VERSION})
set(SEGUE_GIT_REVISION ${REVISION})
configure_file(${SRC}/gateway/version.hpp.in ${OUT} @ONLY)
