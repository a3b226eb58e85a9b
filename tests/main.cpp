// The one doctest main shared by every unit test binary.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <csignal>

int main(int argc, char** argv) {
  // A write to a pipe or socket whose reader is gone must fail with EPIPE in a
  // test (and be checked), not kill the whole test binary, as nimbusd treats it.
  std::signal(SIGPIPE, SIG_IGN);
  return doctest::Context(argc, argv).run();
}
