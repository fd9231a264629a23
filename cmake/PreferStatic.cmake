# Debian's CMake packages of Abseil and yaml-cpp import their shared objects,
# though the static archives sit beside them. For a fully static binary, point
# every imported target found so far at its .a instead.
function(ferry_prefer_static_imports)
  get_directory_property(imported IMPORTED_TARGETS)
  foreach(t ${imported})
    get_target_property(type ${t} TYPE)
    if(NOT type MATCHES "SHARED_LIBRARY|UNKNOWN_LIBRARY")
      continue()
    endif()
    foreach(prop IMPORTED_LOCATION IMPORTED_LOCATION_NONE IMPORTED_LOCATION_RELEASE
                 IMPORTED_LOCATION_RELWITHDEBINFO IMPORTED_LOCATION_NOCONFIG)
      get_target_property(loc ${t} ${prop})
      if(loc AND loc MATCHES "\\.so")
        string(REGEX REPLACE "\\.so(\\.[0-9.]+)?$" ".a" archive "${loc}")
        if(EXISTS "${archive}")
          set_target_properties(${t} PROPERTIES ${prop} "${archive}")
          if(type STREQUAL "SHARED_LIBRARY")
            # A SHARED imported target would still ask for a soname.
            set_target_properties(${t} PROPERTIES IMPORTED_NO_SONAME TRUE)
          endif()
        endif()
      endif()
    endforeach()
  endforeach()
endfunction()
