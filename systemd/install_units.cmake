# SPDX-License-Identifier: Apache-2.0
# Runs at install time (install(SCRIPT)): writes the units with the paths of
# this install, whatever the prefix (cmake --install --prefix, or CPack's
# /usr), so that ExecStart= names the liveupdated that was installed.
# In: LU_UNIT_SOURCES (the .in files), LU_INSTALL_SBINDIR, LU_INSTALL_BINDIR,
# LU_SYSTEMD_UNITDIR.
foreach(var LU_INSTALL_SBINDIR LU_INSTALL_BINDIR LU_SYSTEMD_UNITDIR)
  if(IS_ABSOLUTE "${${var}}")
    set(${var}_FULL "${${var}}")
  else()
    set(${var}_FULL "${CMAKE_INSTALL_PREFIX}/${${var}}")
  endif()
endforeach()
set(LU_SBINDIR "${LU_INSTALL_SBINDIR_FULL}")
set(LU_BINDIR "${LU_INSTALL_BINDIR_FULL}")
foreach(src ${LU_UNIT_SOURCES})
  get_filename_component(unit "${src}" NAME_WLE)
  set(dest "$ENV{DESTDIR}${LU_SYSTEMD_UNITDIR_FULL}/${unit}")
  message(STATUS "Installing: ${dest}")
  configure_file("${src}" "${dest}" @ONLY)
  file(CHMOD "${dest}" PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
endforeach()
