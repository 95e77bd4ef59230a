"""What machine a benchmark ran on, for the line every benchmark prints."""

import os
import platform


def info() -> dict:
    """CPU model, usable cores, memory, load average, Python and TensorFlow versions, GPUs."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    simd = "?"
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
        # TensorFlow's float32 matmul runs about twice as fast with AVX-512 as with AVX2 alone.
        simd = "avx512" if "avx512f" in flags else ("avx2" if "avx2" in flags else "no avx2")
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    memory = ""
    try:
        with open("/proc/meminfo") as f:
            memory = f"{int(f.readline().split()[1]) / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    try:
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    out = {"cpu": cpu, "simd": simd, "cores_usable": cores, "memory": memory, "load_avg_1_5_15": load,
           "python": platform.python_version(), "platform": platform.platform()}
    import sys
    if "tensorflow" in sys.modules:
        tf = sys.modules["tensorflow"]
        out["tensorflow"] = tf.__version__
        out["gpus"] = len(tf.config.list_physical_devices("GPU"))
    return out


def describe() -> str:
    """One line: '<cpu> (<simd>), <n> cores, <memory>, load average a / b / c; Python x, TensorFlow y'."""
    i = info()
    tf = f", TensorFlow {i['tensorflow']}" if "tensorflow" in i else ""
    return (f"{i['cpu']} ({i['simd']}), {i['cores_usable']} cores, {i['memory']} RAM, load average {i['load_avg_1_5_15']}; "
            f"Python {i['python']}{tf}")
