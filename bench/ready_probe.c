/* Prints "ready" and exits: the process both sandbox launchers start when the
 * benchmark measures launch time alone (no Runtime API involved). */
#include <unistd.h>
int main(void) {
  return write(1, "ready\n", 6) == 6 ? 0 : 1;
}
