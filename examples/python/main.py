import sys
import platform

words = sys.stdin.read().split()
print(f"python {platform.python_version()}: {len(words)} words, longest {max(words, key=len) if words else '-'}")
