if(NOT EXISTS "${CMAKE_SOURCE_DIR}/${PROJECT_NAME}.s4ext" AND NOT EXISTS "${CMAKE_SOURCE_DIR}/LICENSE")
  message(FATAL_ERROR "Packaging needs the extension description or a LICENSE file")
endif()
