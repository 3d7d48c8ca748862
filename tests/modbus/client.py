"""A Modbus TCP client for serial2mqtt's tests: pymodbus, an independent implementation,
reaching units through the gateway's Modbus TCP server.

    python3 tests/modbus/client.py HOST PORT OPS.json

OPS: a list of {"op": "hr"|"ir"|"co"|"di"|"write_hr"|"write_co", "unit": N, "address": A,
"count": C (reads), "value": V (writes), "repeat": R (default 1)}. Prints one JSON line per
request: {"ok": [values]} or {"exception": code} or {"error": "text"}, with "ms": the time
from request to answer.
"""

import json
import logging
import sys
import time

from pymodbus.client import ModbusTcpClient


def run(client, op):
    unit, address = op["unit"], op["address"]
    kind = op["op"]
    if kind == "hr":
        return client.read_holding_registers(address, op.get("count", 1), slave=unit)
    if kind == "ir":
        return client.read_input_registers(address, op.get("count", 1), slave=unit)
    if kind == "co":
        return client.read_coils(address, op.get("count", 1), slave=unit)
    if kind == "di":
        return client.read_discrete_inputs(address, op.get("count", 1), slave=unit)
    if kind == "write_hr":
        return client.write_register(address, op["value"], slave=unit)
    if kind == "write_co":
        return client.write_coil(address, bool(op["value"]), slave=unit)
    raise ValueError(kind)


def main():
    host, port, ops_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(ops_path) as f:
        ops = json.load(f)
    client = ModbusTcpClient(host, port=port, timeout=5, retries=0)
    if not client.connect():
        print(json.dumps({"error": "cannot connect"}), flush=True)
        return
    for op in ops:
        for _ in range(op.get("repeat", 1)):
            start = time.perf_counter()
            try:
                rr = run(client, op)
            except Exception as e:  # noqa: BLE001 (reported to the test)
                out = {"error": str(e)}
            else:
                if rr.isError():
                    out = {"exception": getattr(rr, "exception_code", None), "text": str(rr)}
                elif hasattr(rr, "registers") and op["op"] in ("hr", "ir"):
                    out = {"ok": rr.registers}
                elif hasattr(rr, "bits") and op["op"] in ("co", "di"):
                    out = {"ok": [int(b) for b in rr.bits[: op.get("count", 1)]]}
                else:
                    out = {"ok": []}
            out["ms"] = (time.perf_counter() - start) * 1000
            print(json.dumps(out), flush=True)
    client.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.CRITICAL)
    main()
