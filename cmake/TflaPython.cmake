# The tfla Python wheel (tools/python/pyproject.toml; scikit-build-core sets SKBUILD): libtfla
# and the tfla CLI go inside the Python package, in the install component "python" that the
# wheel takes (headers and the CMake package of TflaInstall.cmake stay out of it):
#   <site-packages>/tfla/lib/libtfla.so   found by tfla/_library.py, next to the package
#   <site-packages>/tfla/bin/tfla         run by the `tfla` console script (tfla/_cli.py)
# One unversioned libtfla.so: a wheel cannot hold the .so -> .so.0 -> .so.0.1.0 symlinks (they
# would become three copies), and nothing outside the package links against it.
set_property(TARGET tfla PROPERTY VERSION)
set_property(TARGET tfla PROPERTY SOVERSION)
install(TARGETS tfla LIBRARY DESTINATION tfla/lib COMPONENT python)
if(TARGET tfla_cli)
  set_property(TARGET tfla_cli PROPERTY INSTALL_RPATH "$ORIGIN/../lib")
  install(TARGETS tfla_cli RUNTIME DESTINATION tfla/bin COMPONENT python)
endif()
