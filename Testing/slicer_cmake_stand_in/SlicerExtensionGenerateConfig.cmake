foreach(var EXTENSION_HOMEPAGE EXTENSION_CATEGORY EXTENSION_CONTRIBUTORS EXTENSION_DESCRIPTION
            EXTENSION_ICONURL EXTENSION_SCREENSHOTURLS EXTENSION_DEPENDS)
  if("${${var}}" STREQUAL "")
    message(FATAL_ERROR "Extension metadata ${var} is not set")
  endif()
endforeach()
file(WRITE "${CMAKE_BINARY_DIR}/extension_metadata.txt"
  "homepage ${EXTENSION_HOMEPAGE}\ncategory ${EXTENSION_CATEGORY}\ndepends ${EXTENSION_DEPENDS}\niconurl ${EXTENSION_ICONURL}\nscreenshoturls ${EXTENSION_SCREENSHOTURLS}\n")
