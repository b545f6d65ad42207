#include <stdio.h>
#include "src/util.h"

int main(void) {
    printf("fib(30)=%ld, gcd(84,36)=%ld\n", fib(30), gcd(84, 36));
    return 0;
}
