# The device library as one text, for NVRTC (runtime/cuda/DeviceHeader.cpp.in):
# runtime/cuda/device/kiln_device.cuh with the family headers it includes
# inlined as the preprocessor would, each at its first include (the later
# ones dropped, as their include guards would make them empty). nvcc and the
# CPU emulation read the split files from disk instead;
# test/Runtime/cuda/device/nvrtc_check.cpp inlines the same way.
#
#   kiln_inline_device_header(<device dir> <out var>)
#
# Fails when a .cuh of the directory is not reached from the umbrella, so
# that a new family header cannot go missing from the in-memory library.
# Every file read becomes a configure dependency.
function(kiln_inline_device_header dir out_var)
  file(READ ${dir}/kiln_device.cuh text)
  set(inlined kiln_device.cuh)
  while(TRUE)
    string(REGEX MATCH "#include \"([A-Za-z]+\\.cuh)\"\n" line "${text}")
    if(NOT line)
      break()
    endif()
    set(name ${CMAKE_MATCH_1})
    set(family "")
    if(NOT name IN_LIST inlined)
      file(READ ${dir}/${name} family)
      list(APPEND inlined ${name})
    endif()
    string(FIND "${text}" "${line}" at)
    string(LENGTH "${line}" length)
    math(EXPR rest "${at} + ${length}")
    string(SUBSTRING "${text}" 0 ${at} before)
    string(SUBSTRING "${text}" ${rest} -1 after)
    set(text "${before}${family}${after}")
  endwhile()
  file(GLOB headers RELATIVE ${dir} CONFIGURE_DEPENDS ${dir}/*.cuh)
  foreach(header IN LISTS headers)
    if(NOT header IN_LIST inlined)
      message(FATAL_ERROR "runtime/cuda/device/${header} is not included by "
                          "kiln_device.cuh, so NVRTC would not see it")
    endif()
  endforeach()
  list(TRANSFORM inlined PREPEND ${dir}/)
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${inlined})
  set(${out_var} "${text}" PARENT_SCOPE)
endfunction()
