"""What the tests and the benchmarks both drive the app with: launches stored as the callback stores them, the
sandbox EHR on a live port in a vendor personality, referrals in bulk. It lives beside the sandbox EHR (which
never ships), so benchmarks/ need nothing from tests/."""
