// Compiles the precompiled headers that every layer reuses (cmake/layers.cmake).
