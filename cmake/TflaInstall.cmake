# cmake --install: headers, libtfla, the tfla CLI and a CMake package so that
# find_package(tfla) + target_link_libraries(app tfla::tfla) works from another project.
include(CMakePackageConfigHelpers)
install(TARGETS tfla EXPORT tflaTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/src/include/tfla DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
if(TARGET tfla_cli)
  install(TARGETS tfla_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
install(EXPORT tflaTargets NAMESPACE tfla:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tfla)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/tflaConfig.cmake.in
                              ${CMAKE_CURRENT_BINARY_DIR}/tflaConfig.cmake
                              INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tfla)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/tflaConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/tflaConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/tflaConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tfla)
