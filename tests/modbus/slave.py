"""A Modbus RTU slave bus for serial2mqtt's tests: pymodbus, an independent implementation,
serving one or more unit ids on one serial port, or on a TCP port.

    python3 tests/modbus/slave.py PORT SPEC.json
    python3 tests/modbus/slave.py tcp:PORT SPEC.json       (Modbus TCP: MBAP frames)
    python3 tests/modbus/slave.py rtu-tcp:PORT SPEC.json   (RTU frames over TCP)

SPEC: {"baud": 9600, "units": {"1": {"hr": [..], "ir": [..], "co": [..], "di": [..]}}}: each
table's values from address 0. A unit listed in "silent" is not served (a dead unit).
Prints "ready" once serving. Writes to holding registers and coils are appended to the file
SPEC["writes"] (if given) as "write UNIT TABLE ADDRESS VALUES" lines, so a test can see what
reached the registers.
"""

import asyncio
import json
import logging
import os
import sys

from pymodbus.datastore import (
    ModbusSequentialDataBlock,
    ModbusServerContext,
    ModbusSlaveContext,
)
from pymodbus.framer import ModbusRtuFramer, ModbusSocketFramer
from pymodbus.server import StartAsyncSerialServer, StartAsyncTcpServer


class Reporting(ModbusSequentialDataBlock):
    """A block that reports writes to a file."""

    def __init__(self, unit, table, values, log):
        super().__init__(0, values)
        self.unit, self.table, self.log = unit, table, log

    def setValues(self, address, values):  # noqa: N802 (pymodbus's name)
        super().setValues(address, values)
        if self.log:
            with open(self.log, "a") as f:
                f.write(f"write {self.unit} {self.table} {address} {list(values)}\n")


async def main():
    port, spec_path = sys.argv[1], sys.argv[2]
    with open(spec_path) as f:
        spec = json.load(f)
    devices = {}
    for unit, tables in spec["units"].items():
        u = int(unit)
        # zero_mode: the request's address is the block's index, as the protocol says.
        devices[u] = ModbusSlaveContext(
            hr=Reporting(u, "hr", tables.get("hr", [0]), spec.get("writes")),
            ir=ModbusSequentialDataBlock(0, tables.get("ir", [0])),
            co=Reporting(u, "co", tables.get("co", [False]), spec.get("writes")),
            di=ModbusSequentialDataBlock(0, tables.get("di", [False])),
            zero_mode=True,
        )
    context = ModbusServerContext(slaves=devices, single=False)
    if port.startswith(("tcp:", "rtu-tcp:")):
        kind, number = port.split(":")
        framer = ModbusRtuFramer if kind == "rtu-tcp" else ModbusSocketFramer
        # "ready" once listening: the server is started as a task, its socket bound first.
        server = asyncio.create_task(
            StartAsyncTcpServer(
                context=context, framer=framer, address=("127.0.0.1", int(number))
            )
        )
        for _ in range(100):
            await asyncio.sleep(0.05)
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", int(number))
                writer.close()
                break
            except OSError:
                continue
        print("ready", flush=True)
        await server
        return
    print("ready", flush=True)
    await StartAsyncSerialServer(
        context=context,
        framer=ModbusRtuFramer,
        port=port,
        baudrate=spec.get("baud", 9600),
    )


if __name__ == "__main__":
    # Exceptions it answers on purpose are the tests' business, not log noise;
    # SLAVE_LOG=DEBUG shows every frame pymodbus reads and sends.
    logging.basicConfig(level=getattr(logging, os.environ.get("SLAVE_LOG", "CRITICAL")))
    asyncio.run(main())
