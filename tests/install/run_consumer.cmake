# Installs a built tfla into a scratch prefix, then configures, builds and runs a consumer
# project (consumer/) that finds it with find_package(tfla) and links tfla::tfla.
# Run by ctest as:
#   cmake -DBUILD_DIR=<tfla build> -DCONSUMER_DIR=<consumer source> -DWORK_DIR=<scratch>
#         -DGENERATOR=<gen> -DMAKE_PROGRAM=<ninja/make> -DCXX_COMPILER=<c++>
#         -DCXX_FLAGS=<flags> -DEXPECT_VERSION=<x.y.z> -P run_consumer.cmake
# Fails (FATAL_ERROR, non-zero exit) at the first step that goes wrong, printing its output.
cmake_minimum_required(VERSION 3.24)

foreach(var BUILD_DIR CONSUMER_DIR WORK_DIR GENERATOR CXX_COMPILER EXPECT_VERSION)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "run_consumer.cmake: -D${var}=... is required")
  endif()
endforeach()

# run(<step name> <command...>): runs a command, fails the test with its output if it fails.
function(run step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${step} failed (exit ${rc}):\n${ARGN}\n--- stdout\n${out}\n--- stderr\n${err}")
  endif()
  set(run_output "${out}" PARENT_SCOPE)
endfunction()

set(prefix "${WORK_DIR}/prefix")
set(consumer_build "${WORK_DIR}/consumer-build")
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

# 1. cmake --install
run("cmake --install" "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${prefix}")
message(STATUS "installed tfla into ${prefix}")

# 2. the installed tree: public headers, the package config, the library
foreach(f include/tfla/tfla.hpp include/tfla/tfla.h)
  if(NOT EXISTS "${prefix}/${f}")
    message(FATAL_ERROR "install is missing ${f}")
  endif()
endforeach()
file(GLOB_RECURSE config_files "${prefix}/*/tflaConfig.cmake")
file(GLOB_RECURSE version_files "${prefix}/*/tflaConfigVersion.cmake")
file(GLOB_RECURSE libs "${prefix}/*/libtfla.so*")
if(NOT config_files OR NOT version_files OR NOT libs)
  message(FATAL_ERROR "install is missing tflaConfig.cmake, tflaConfigVersion.cmake or libtfla.so "
                      "(found: ${config_files} ${version_files} ${libs})")
endif()
# Public headers must not pull in CUDA, NVRTC or SQLite (DESIGN.md: nothing leaks).
file(GLOB public_headers "${prefix}/include/tfla/*")
foreach(h IN LISTS public_headers)
  file(STRINGS "${h}" includes REGEX "^[ \t]*#[ \t]*include")
  foreach(line IN LISTS includes)
    if(line MATCHES "cuda|nvrtc|sqlite")
      message(FATAL_ERROR "installed public header ${h} includes a private dependency: ${line}")
    endif()
  endforeach()
endforeach()

# 3. configure and build the consumer against the installed package only
set(configure_args -S "${CONSUMER_DIR}" -B "${consumer_build}" -G "${GENERATOR}"
    "-DCMAKE_PREFIX_PATH=${prefix}" "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}"
    -DCMAKE_BUILD_TYPE=Release "-DCMAKE_CXX_FLAGS=${CXX_FLAGS}"
    "-DCMAKE_EXE_LINKER_FLAGS=${CXX_FLAGS}")
if(MAKE_PROGRAM)
  list(APPEND configure_args "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()
run("consumer configure" "${CMAKE_COMMAND}" ${configure_args})
run("consumer build" "${CMAKE_COMMAND}" --build "${consumer_build}")

# 4. run it and check what it printed
run("consumer run" "${consumer_build}/app")
set(app_output "${run_output}")
message(STATUS "consumer output:\n${app_output}")
foreach(expected
        "version=${EXPECT_VERSION}\n"
        "c_version=${EXPECT_VERSION}\n"
        "workspace_status=0\n"
        "bad_config_status=1\n"
        "bad_config_error=config item 'chunk=abc'")
  string(FIND "${app_output}" "${expected}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "consumer output lacks '${expected}':\n${app_output}")
  endif()
endforeach()
if(NOT app_output MATCHES "nvrtc=[1-9][0-9]*\\.[0-9]+\n")
  message(FATAL_ERROR "consumer did not report the NVRTC version:\n${app_output}")
endif()
if(NOT app_output MATCHES "workspace_bytes=([1-9][0-9]*)\n")
  message(FATAL_ERROR "consumer got no workspace size:\n${app_output}")
endif()
set(c_bytes "${CMAKE_MATCH_1}")
if(NOT app_output MATCHES "cpp_workspace_bytes=${c_bytes}\n")
  message(FATAL_ERROR "C and C++ workspace sizes differ:\n${app_output}")
endif()

# 5. the installed CLI runs from the prefix (its install RPATH finds libtfla)
if(EXISTS "${prefix}/bin/tfla")
  run("installed tfla version" "${prefix}/bin/tfla" version)
  if(NOT run_output MATCHES "tfla ${EXPECT_VERSION}")
    message(FATAL_ERROR "installed tfla printed '${run_output}', expected 'tfla ${EXPECT_VERSION}'")
  endif()
endif()
message(STATUS "install + find_package(tfla) consumer: ok")
