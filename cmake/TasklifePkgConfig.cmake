# tasklife_write_pc(<module> LIBRARY <target> TIER <tier> DESCRIPTION <text> [REQUIRES <modules>...])
#
# Writes and installs <libdir>/pkgconfig/<module>.pc for one library of one tier.
# The file is relocatable (paths from ${pcfiledir}), so an install moved or made with
# `cmake --install --prefix <dir>` still works. fmt and liburcu are private
# dependencies: with the static archive (the default) use `pkg-config --static`.
function(tasklife_write_pc module)
  cmake_parse_arguments(arg "" "LIBRARY;TIER;DESCRIPTION" "REQUIRES" ${ARGN})
  get_target_property(type ${arg_LIBRARY} TYPE)
  if(type STREQUAL "INTERFACE_LIBRARY")
    # The fast target of an unchecked build is the library itself.
    get_target_property(links ${arg_LIBRARY} INTERFACE_LINK_LIBRARIES)
    list(GET links 0 real)
    get_target_property(type ${real} TYPE)
    get_target_property(output ${real} OUTPUT_NAME)
    if(NOT output)
      set(output ${real})
    endif()
  else()
    get_target_property(output ${arg_LIBRARY} OUTPUT_NAME)
    if(NOT output)
      set(output ${arg_LIBRARY})
    endif()
  endif()
  file(RELATIVE_PATH to_prefix "/prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/prefix")
  string(REGEX REPLACE "/$" "" to_prefix "${to_prefix}")
  set(cflags "-I\${includedir}/tasklife-${arg_TIER} -I\${includedir}")
  set(requires_private "")
  set(libs_private "")
  if(arg_LIBRARY MATCHES "testing")
    # testing.hpp includes GoogleTest: a public dependency, as is tasklife itself.
    set(requires_private "")
  else()
    set(requires_private "fmt liburcu-memb")
    set(libs_private "-pthread")
  endif()
  if(type STREQUAL "STATIC_LIBRARY")
    string(APPEND cflags " -DTASKLIFE_STATIC_DEFINE")
  endif()
  list(JOIN arg_REQUIRES " " requires)
  set(file "${PROJECT_BINARY_DIR}/pkgconfig/${module}.pc")
  file(WRITE "${file}" "\
prefix=\${pcfiledir}/${to_prefix}
libdir=\${prefix}/${CMAKE_INSTALL_LIBDIR}
includedir=\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}

Name: ${module}
Description: ${arg_DESCRIPTION} (C++20)
URL: ${PROJECT_HOMEPAGE_URL}
Version: ${PROJECT_VERSION}
Requires: ${requires}
Requires.private: ${requires_private}
Cflags: ${cflags}
Libs: -L\${libdir} -l${output}
Libs.private: ${libs_private}
")
  install(FILES "${file}" DESTINATION "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
endfunction()
