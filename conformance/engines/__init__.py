"""Black-box tests of pyoci (or any runc-compatible runtime) under real container engines."""
