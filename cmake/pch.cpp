// The donor of the precompiled LibTorch headers (CMakeLists.txt, invp_pch): compiles nothing.
