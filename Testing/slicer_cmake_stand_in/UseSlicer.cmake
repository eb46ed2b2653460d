# Stand-ins for the Slicer/CTK macros the extension calls, with the same file layout:
# CTK's ctkMacroCompilePythonScript copies every script and resource to
# DESTINATION_DIR/<its path relative to the source folder> and installs the folder with
#   install(DIRECTORY "<DESTINATION_DIR>" DESTINATION <INSTALL_DIR>)       (the folder itself)
#   install(DIRECTORY "<DESTINATION_DIR>/" DESTINATION <INSTALL_DIR>)      (NO_INSTALL_SUBDIR)
# and Slicer's slicerMacroBuildScriptedModule calls it with DESTINATION_DIR
# <build>/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}, INSTALL_DIR ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}
# and NO_INSTALL_SUBDIR. Files are copied at configure time (Slicer: at build time) and
# recorded in ${CMAKE_BINARY_DIR}/listed_files.txt as "<target> <kind> <absolute path>".
file(WRITE "${CMAKE_BINARY_DIR}/listed_files.txt" "")

function(_stand_in_record target kind)
  foreach(file ${ARGN})
    if(IS_ABSOLUTE "${file}")
      set(path "${file}")
    else()
      set(path "${CMAKE_CURRENT_SOURCE_DIR}/${file}")
    endif()
    if(NOT EXISTS "${path}")
      message(FATAL_ERROR "${target}: listed ${kind} file does not exist: ${path}")
    endif()
    file(APPEND "${CMAKE_BINARY_DIR}/listed_files.txt" "${target} ${kind} ${path}\n")
  endforeach()
endfunction()

function(_stand_in_copy destination)
  foreach(file ${ARGN})
    if(IS_ABSOLUTE "${file}")
      message(FATAL_ERROR "CTK copies a file to DESTINATION_DIR/<relative path>: give ${file} relative to ${CMAKE_CURRENT_SOURCE_DIR}")
    endif()
    configure_file("${CMAKE_CURRENT_SOURCE_DIR}/${file}" "${destination}/${file}" COPYONLY)
  endforeach()
endfunction()

function(ctkMacroCompilePythonScript)
  cmake_parse_arguments(MY "NO_INSTALL_SUBDIR;GLOBAL_TARGET" "TARGET_NAME;DESTINATION_DIR;INSTALL_DIR" "SCRIPTS;RESOURCES" ${ARGN})
  if(MY_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "ctkMacroCompilePythonScript: unknown arguments ${MY_UNPARSED_ARGUMENTS}")
  endif()
  foreach(required TARGET_NAME SCRIPTS DESTINATION_DIR INSTALL_DIR)
    if(NOT MY_${required})
      message(FATAL_ERROR "ctkMacroCompilePythonScript: ${required} is required")
    endif()
  endforeach()
  _stand_in_record(${MY_TARGET_NAME} script ${MY_SCRIPTS})
  _stand_in_record(${MY_TARGET_NAME} resource ${MY_RESOURCES})
  _stand_in_copy("${MY_DESTINATION_DIR}" ${MY_SCRIPTS} ${MY_RESOURCES})
  if(MY_NO_INSTALL_SUBDIR)
    install(DIRECTORY "${MY_DESTINATION_DIR}/" DESTINATION "${MY_INSTALL_DIR}" COMPONENT RuntimeLibraries USE_SOURCE_PERMISSIONS)
  else()
    install(DIRECTORY "${MY_DESTINATION_DIR}" DESTINATION "${MY_INSTALL_DIR}" COMPONENT RuntimeLibraries USE_SOURCE_PERMISSIONS)
  endif()
endfunction()

function(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(MY_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "slicerMacroBuildScriptedModule: unknown arguments ${MY_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT MY_NAME OR NOT MY_SCRIPTS)
    message(FATAL_ERROR "slicerMacroBuildScriptedModule: NAME and SCRIPTS are required")
  endif()
  ctkMacroCompilePythonScript(
    TARGET_NAME ${MY_NAME}
    SCRIPTS "${MY_SCRIPTS}"
    RESOURCES "${MY_RESOURCES}"
    DESTINATION_DIR ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}
    INSTALL_DIR ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}
    NO_INSTALL_SUBDIR)
endfunction()

function(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "TESTNAME_PREFIX" "SCRIPT;SLICER_ARGS" ${ARGN})
  _stand_in_record(python_unittest script ${MY_SCRIPT})
endfunction()
