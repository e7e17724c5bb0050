# One static library per layer, and a build that refuses an include running
# back up.
#
# Each library gets a header view at configure time, build/layers/<library>/,
# holding symlinks to just its own folders and files under their usual paths
# (actors/core -> <source>/actors/core, ...). That view is the library's only
# PUBLIC include directory, and the repository root is nobody's include
# directory, so `#include "actors/core/store.hpp"` resolves in a library that
# links troupe_core (and in the tests) and is "No such file" everywhere else.
# Links are PUBLIC, so a layer sees the views of everything below it.

# Precompiled CAF/json/spdlog headers, built once and reused by every layer.
file(CONFIGURE OUTPUT ${CMAKE_BINARY_DIR}/generated/pch.cpp
  CONTENT "// Compiles the precompiled headers every layer reuses.\n")
add_library(troupe_pch STATIC ${CMAKE_BINARY_DIR}/generated/pch.cpp)
target_link_libraries(troupe_pch PRIVATE CAF::core nlohmann_json::nlohmann_json spdlog::spdlog)
target_precompile_headers(troupe_pch PRIVATE <caf/all.hpp> <nlohmann/json.hpp> <spdlog/spdlog.h>)

# troupe_layer(<library>
#   PARTS <folder or header glob>...   what the library owns (its view); a folder's
#                                      *.cpp are its sources, a glob like http/*.hpp
#                                      brings the matching .cpp files beside it
#   [SOURCES <file>...]                instead of the sources found from PARTS
#   [USES <troupe library>...]         the layers below it that it may include
#   [LINKS <third-party target>...])
function(troupe_layer name)
  cmake_parse_arguments(L "" "" "PARTS;SOURCES;USES;LINKS" ${ARGN})
  set(view ${CMAKE_BINARY_DIR}/layers/${name})
  file(REMOVE_RECURSE ${view})
  set(sources)
  foreach(part IN LISTS L_PARTS)
    if(IS_DIRECTORY ${CMAKE_SOURCE_DIR}/${part})
      set(links ${part})
      file(GLOB found CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/${part}/*.cpp)
    else()
      file(GLOB links RELATIVE ${CMAKE_SOURCE_DIR} CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/${part})
      string(REGEX REPLACE "\\.hpp$" ".cpp" cpp_glob ${part})
      set(found)
      if(NOT cpp_glob STREQUAL part)
        file(GLOB found CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/${cpp_glob})
      endif()
    endif()
    if(NOT links)
      message(FATAL_ERROR "troupe_layer(${name}): ${part} matches nothing")
    endif()
    foreach(link IN LISTS links)
      get_filename_component(parent ${view}/${link} DIRECTORY)
      file(MAKE_DIRECTORY ${parent})
      file(CREATE_LINK ${CMAKE_SOURCE_DIR}/${link} ${view}/${link} SYMBOLIC)
    endforeach()
    list(APPEND sources ${found})
  endforeach()
  if(L_SOURCES)
    list(TRANSFORM L_SOURCES PREPEND ${CMAKE_SOURCE_DIR}/ OUTPUT_VARIABLE sources)
  endif()
  # A source belongs to the first library that claims it: a wing's policy
  # library (declared first) takes its files out of the wing's folder.
  get_property(claimed GLOBAL PROPERTY TROUPE_CLAIMED_SOURCES)
  if(claimed)
    list(REMOVE_ITEM sources ${claimed})
  endif()
  set_property(GLOBAL APPEND PROPERTY TROUPE_CLAIMED_SOURCES ${sources})
  add_library(${name} STATIC ${sources})
  target_include_directories(${name} PUBLIC ${view})
  target_link_libraries(${name} PUBLIC ${L_USES} ${L_LINKS})
  target_precompile_headers(${name} REUSE_FROM troupe_pch)
  set_property(GLOBAL APPEND PROPERTY TROUPE_LAYERS ${name})
endfunction()

# troupe_layer_check(<library> SEES <header> HIDES <header>): a ctest that builds
# a probe `#include <SEES>` then `#include <HIDES>` with the library's usage
# requirements and passes only when the compiler finds the first and refuses
# the second, so the proof that an upward include fails keeps running.
function(troupe_layer_check name)
  cmake_parse_arguments(C "" "SEES;HIDES" "" ${ARGN})
  set(probe ${CMAKE_BINARY_DIR}/layers/checks/${name}.cpp)
  file(WRITE ${probe} "#include \"${C_SEES}\"\n#include \"${C_HIDES}\"\n")
  add_library(layer_probe_${name} OBJECT EXCLUDE_FROM_ALL ${probe})
  target_link_libraries(layer_probe_${name} PRIVATE ${name})
  add_test(NAME layers.${name}
    COMMAND ${CMAKE_COMMAND} --build ${CMAKE_BINARY_DIR} --target layer_probe_${name})
  string(REPLACE "." "\\." hidden ${C_HIDES})
  set_tests_properties(layers.${name} PROPERTIES
    # gcc: "x.hpp: No such file or directory"; clang: "'x.hpp' file not found"
    PASS_REGULAR_EXPRESSION "${hidden}: No such file or directory;'${hidden}' file not found")
endfunction()
