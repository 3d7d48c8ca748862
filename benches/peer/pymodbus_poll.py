"""The peer of `cargo bench --bench bus`: Modbus RTU meters polled the way a user would write
it with pymodbus: one client, the units read in turn, as fast as they answer.

    python3 pymodbus_poll.py PORT BAUD UNITS SECONDS   -> prints transactions/s
"""

import logging
import sys
import time

from pymodbus.client import ModbusSerialClient

logging.basicConfig(level=logging.CRITICAL)


def main():
    port, baud, units, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    client = ModbusSerialClient(port=port, baudrate=baud, timeout=0.1, retries=0)
    client.connect()
    # One second of warm-up, as the gateway gets.
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        for unit in range(1, units + 1):
            client.read_input_registers(0, 10, slave=unit)
    done, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        for unit in range(1, units + 1):
            r = client.read_input_registers(0, 10, slave=unit)
            if not r.isError():
                done += 1
    print(f"{done / (time.monotonic() - start):.2f}")


if __name__ == "__main__":
    main()
