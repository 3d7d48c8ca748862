//! Simulated serial devices that behave like the real ones: silent until asked where the
//! real one is, answering after a realistic delay, with their real checksums.

use std::time::Duration;

use super::Pty;

/// An MH-Z19 CO2 sensor on the pty: silent until sent `FF 01 86 00 00 00 00 00 79`, then
/// answers `FF 86 HH LL .. CS` after 20 ms with its real checksum. `answers` says, request by
/// request, what it does: Some(ppm) answers, None stays silent; a ppm above 60000 answers
/// with a corrupted checksum. Returns the times the requests arrived.
pub fn mhz19(
    pty: Pty,
    answers: impl Fn(usize) -> Option<u16> + Send + 'static,
) -> tokio::task::JoinHandle<Vec<std::time::Instant>> {
    use tokio::io::AsyncWriteExt;
    tokio::spawn(async move {
        let mut master = pty.master;
        let _keep = pty.path;
        let mut arrivals = Vec::new();
        let mut req = [0u8; 9];
        while request(&mut master, &mut req).await {
            assert_eq!(hex::encode(req), "ff0186000000000079", "the read command");
            arrivals.push(std::time::Instant::now());
            let Some(ppm) = answers(arrivals.len() - 1) else {
                continue;
            };
            tokio::time::sleep(Duration::from_millis(20)).await;
            let mut f = vec![0xFF, 0x86];
            f.extend_from_slice(&(ppm % 60000).to_be_bytes());
            f.extend_from_slice(&[0x47, 0x00, 0x00, 0x00]);
            let sum = f[1..8].iter().fold(0u8, |a, b| a.wrapping_add(*b));
            f.push(0u8.wrapping_sub(sum).wrapping_add(u8::from(ppm > 60000)));
            if master.write_all(&f).await.is_err() {
                break;
            }
        }
        arrivals
    })
}

/// A DSMR 5 P1 telegram as a Landis+Gyr E360 sends it: header, blank line, OBIS lines, `!`
/// and the CRC-16/ARC of everything from `/` through `!` as four hex digits, then CR LF.
pub fn dsmr_telegram(import_kwh: &str, power_kw: &str) -> Vec<u8> {
    let body = format!(
        "/Ene5\\T210-D ESMR5.0\r\n\r\n1-3:0.2.8(50)\r\n0-0:1.0.0(261202151500W)\r\n\
         0-0:96.1.1(4530303437303030303037363330383138)\r\n\
         1-0:1.8.1({import_kwh}*kWh)\r\n1-0:1.8.2(004567.890*kWh)\r\n\
         1-0:2.8.1(000000.000*kWh)\r\n0-0:96.14.0(0002)\r\n1-0:1.7.0({power_kw}*kW)\r\n\
         1-0:2.7.0(00.000*kW)\r\n0-0:96.7.21(00010)\r\n1-0:32.7.0(229.0*V)\r\n!"
    );
    let crc = crc::Crc::<u16>::new(&crc::CRC_16_ARC).checksum(body.as_bytes());
    format!("{body}{crc:04X}\r\n").into_bytes()
}

/// Reads one whole request into `buf`: false when none came for 5 s or the pty is gone. A
/// read before the gateway has opened the other end fails with EIO on Linux; that is waited
/// out, as a device on a cable waits for its host.
pub async fn request(master: &mut tokio_serial::SerialStream, buf: &mut [u8]) -> bool {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, master.read_exact(buf)).await {
            Ok(Ok(_)) => return true,
            // The deadline is checked here too: timeout_at polls the read first, and a read
            // that fails at once never lets it expire.
            Ok(Err(e))
                if e.raw_os_error() == Some(libc::EIO)
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            _ => return false,
        }
    }
}

/// An NMEA 0183 sentence: `$`, the body, `*` and the XOR of the body's bytes, CR LF.
pub fn nmea(body: &str) -> String {
    let sum = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{sum:02X}\r\n")
}

/// An SDS011 in query mode: silent until it reads the 19-byte query
/// `AA B4 04 00 .. 00 FF FF 02 AB`, then it answers one data frame (PM2.5 `pm25_tenths(i)` for
/// the i-th query) after 30 ms. Returns how many queries it answered.
pub fn sds011_query(
    pty: Pty,
    pm25_tenths: impl Fn(usize) -> u16 + Send + 'static,
) -> tokio::task::JoinHandle<usize> {
    use tokio::io::AsyncWriteExt;
    tokio::spawn(async move {
        let mut master = pty.master;
        let _keep = pty.path;
        let mut query = [0u8; 19];
        let mut answered = 0;
        while request(&mut master, &mut query).await {
            assert_eq!(
                hex::encode_upper(query),
                "AAB404000000000000000000000000FFFF02AB",
                "the query command"
            );
            tokio::time::sleep(Duration::from_millis(30)).await;
            if master
                .write_all(&super::sds011(pm25_tenths(answered)))
                .await
                .is_err()
            {
                break;
            }
            answered += 1;
        }
        answered
    })
}

/// The registers a PZEM-016 answers for function 04 from 0: volts x10, current in mA (32 bits,
/// low word first), power x10 (low word first), energy in Wh (low word first), Hz x10, power
/// factor x100, alarm.
pub fn pzem016_registers(volts_x10: u16, milliamps: u32, watts_x10: u32, wh: u32) -> [u16; 10] {
    let lo = |v: u32| (v & 0xFFFF) as u16;
    let hi = |v: u32| (v >> 16) as u16;
    [
        volts_x10,
        lo(milliamps),
        hi(milliamps),
        lo(watts_x10),
        hi(watts_x10),
        lo(wh),
        hi(wh),
        500,
        100,
        0,
    ]
}

/// Appends the Modbus RTU CRC (CRC-16/MODBUS, low byte first).
pub fn with_modbus_crc(mut frame: Vec<u8>) -> Vec<u8> {
    let crc = crc::Crc::<u16>::new(&crc::CRC_16_MODBUS).checksum(&frame);
    frame.extend_from_slice(&crc.to_le_bytes());
    frame
}

/// PZEM-016 meters on one RS-485 line: reads 8-byte requests, checks their CRC, and the meter
/// at the request's address answers `addr 04 14 <registers> CRC` after 20 ms, at 9600 baud's
/// pace (the whole 25 bytes take 26 ms on the wire), if `registers(addr, n)` (n: that meter's
/// request count) gives it something to say; None: silent. Returns each request's address and
/// arrival.
pub fn pzem016_bus(
    pty: Pty,
    registers: impl Fn(u8, usize) -> Option<[u16; 10]> + Send + 'static,
) -> tokio::task::JoinHandle<Vec<(u8, std::time::Instant)>> {
    use tokio::io::AsyncWriteExt;
    tokio::spawn(async move {
        let mut master = pty.master;
        let _keep = pty.path;
        let mut asked = Vec::new();
        let mut counts = [0usize; 256];
        let mut req = [0u8; 8];
        while request(&mut master, &mut req).await {
            assert_eq!(
                with_modbus_crc(req[..6].to_vec()),
                req,
                "the request's CRC: {}",
                hex::encode(req)
            );
            assert_eq!(
                &req[1..6],
                &[0x04, 0, 0, 0, 10],
                "read 10 input registers from 0"
            );
            let addr = req[0];
            asked.push((addr, std::time::Instant::now()));
            let n = counts[usize::from(addr)];
            counts[usize::from(addr)] += 1;
            let Some(regs) = registers(addr, n) else {
                continue;
            };
            tokio::time::sleep(Duration::from_millis(20)).await;
            let mut answer = vec![addr, 0x04, 20];
            for r in regs {
                answer.extend_from_slice(&r.to_be_bytes());
            }
            let answer = with_modbus_crc(answer);
            for chunk in answer.chunks(5) {
                if master.write_all(chunk).await.is_err() {
                    return asked;
                }
                tokio::time::sleep(Duration::from_micros(5200)).await;
            }
        }
        asked
    })
}

/// A Victron VE.Direct text-protocol block as a charge controller sends it once a second:
/// `\r\n<label>\t<value>` lines closed by `\r\nChecksum\t` and one byte that makes the sum of
/// every byte of the block 0 mod 256 (so in about half of real blocks it is 0x80-0xFF, no
/// text). `millivolts` and `milliamps` are the battery's V and I.
pub fn vedirect_block(millivolts: u32, milliamps: i32) -> Vec<u8> {
    let mut block = format!(
        "\r\nPID\t0xA053\r\nFW\t159\r\nSER#\tHQ2132ABCDE\r\nV\t{millivolts}\r\nI\t{milliamps}\r\n\
         VPV\t18940\r\nPPV\t25\r\nCS\t3\r\nMPPT\t2\r\nERR\t0\r\nLOAD\tON\r\nH19\t1234\r\n\
         H20\t12\r\nH21\t85\r\nHSDS\t17\r\nChecksum\t"
    )
    .into_bytes();
    let sum = block.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    block.push(0u8.wrapping_sub(sum));
    block
}

/// An f32 as two registers, high word first.
fn f32_words(v: f32) -> [u16; 2] {
    let b = v.to_be_bytes();
    [
        u16::from_be_bytes([b[0], b[1]]),
        u16::from_be_bytes([b[2], b[3]]),
    ]
}

/// An Eastron SDM630's input registers: three phases, 50 Hz, energy counters.
pub fn sdm630_input_registers() -> Vec<u16> {
    let mut ir = vec![0u16; 0x158];
    let mut put = |at: usize, v: f32| ir[at..at + 2].copy_from_slice(&f32_words(v));
    for (i, v) in [231.2, 229.8, 232.5].into_iter().enumerate() {
        put(2 * i, v);
    }
    for (i, a) in [4.2, 1.1, 0.5].into_iter().enumerate() {
        put(6 + 2 * i, a);
    }
    for (i, w) in [950.0, 240.0, 110.0].into_iter().enumerate() {
        put(0x0C + 2 * i, w);
    }
    put(0x34, 1300.0);
    put(0x38, 1400.0);
    put(0x3C, 200.0);
    put(0x3E, 0.93);
    put(0x46, 50.02);
    put(0x48, 1234.5);
    put(0x4A, 12.25);
    put(0x156, 1246.75);
    ir
}

/// An Eastron SDM120's input registers (229.6 V, 2.35 A, 512.3 W, PF 0.95, 49.98 Hz, 815.25 kWh
/// imported) and its holding registers up to the meter code at 0xFC02 (0x0020, "SDM120").
pub fn sdm120_registers() -> (Vec<u16>, Vec<u16>) {
    let mut ir = vec![0u16; 0x158];
    let mut put = |at: usize, v: f32| ir[at..at + 2].copy_from_slice(&f32_words(v));
    put(0x00, 229.6);
    put(0x06, 2.35);
    put(0x0C, 512.3);
    put(0x1E, 0.95);
    put(0x46, 49.98);
    put(0x48, 815.25);
    put(0x156, 815.25);
    let mut hr = vec![0u16; 0xFC03];
    hr[0xFC02] = 0x0020;
    (ir, hr)
}
