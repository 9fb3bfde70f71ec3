"""FP32 vs INT8 accuracy and size report (see refrt/quantization/report.py)."""

import sys

from refrt.quantization.report import main

if __name__ == "__main__":
    sys.exit(main())
