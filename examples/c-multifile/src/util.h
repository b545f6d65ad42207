#ifndef UTIL_H
#define UTIL_H
long fib(int n);
long gcd(long a, long b);
#endif
