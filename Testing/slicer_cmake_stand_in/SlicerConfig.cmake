# A small stand-in for the SlicerConfig.cmake of a Slicer build tree, so the extension's CMake
# files can be configured without Slicer. It provides what those files use and checks what
# Slicer's own macros would trip over: every listed script/resource must exist, and the
# extension must define its metadata. Each macro records the files it was given in
# ${CMAKE_BINARY_DIR}/listed_files.txt as "<target> <kind> <absolute path>".

set(Slicer_FOUND TRUE)
set(Slicer_USE_FILE "${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake")
set(Slicer_EXTENSION_GENERATE_CONFIG "${CMAKE_CURRENT_LIST_DIR}/SlicerExtensionGenerateConfig.cmake")
set(Slicer_EXTENSION_CPACK "${CMAKE_CURRENT_LIST_DIR}/SlicerExtensionCPack.cmake")
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR "lib/Slicer-5.10/qt-scripted-modules")
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR "lib/Slicer-5.10/qt-scripted-modules")
