if(NOT EXISTS "${CMAKE_SOURCE_DIR}/LICENSE")
  message(FATAL_ERROR "The ExtensionsIndex requires a LICENSE file")
endif()
