#include <stdio.h>

/* Reads numbers from stdin and prints their sum. */
int main(void) {
    long total = 0, x;
    while (scanf("%ld", &x) == 1) total += x;
    printf("sum=%ld\n", total);
    return 0;
}
