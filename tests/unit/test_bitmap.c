#include "check.h"
int main(void) { TEST_DONE(); }
