// Logging to stderr (results go to stdout). Quiet mode silences info, not warnings.
#pragma once
#include <string>

namespace invp::log {
void set_quiet(bool quiet);
bool quiet();
void info(const std::string& msg);
void warn(const std::string& msg);
bool stderr_is_tty();
}  // namespace invp::log
