//! The models shipped in the binary: every file of `models/` in the source tree (a test keeps
//! this list and the folder equal).

/// Each built-in model file: its name in `models/` and its text.
pub const FILES: &[(&str, &str)] = &[
    ("benewake-tfmini.yaml", include_str!("../../models/benewake-tfmini.yaml")),
    ("carlo-gavazzi-em24.yaml", include_str!("../../models/carlo-gavazzi-em24.yaml")),
    ("carlo-gavazzi-em340.yaml", include_str!("../../models/carlo-gavazzi-em340.yaml")),
    ("chint-dtsu666.yaml", include_str!("../../models/chint-dtsu666.yaml")),
    ("dsmr-4.yaml", include_str!("../../models/dsmr-4.yaml")),
    ("dsmr-5.yaml", include_str!("../../models/dsmr-5.yaml")),
    ("eastron-sdm120.yaml", include_str!("../../models/eastron-sdm120.yaml")),
    ("eastron-sdm230.yaml", include_str!("../../models/eastron-sdm230.yaml")),
    ("eastron-sdm630.yaml", include_str!("../../models/eastron-sdm630.yaml")),
    ("eastron-sdm72d.yaml", include_str!("../../models/eastron-sdm72d.yaml")),
    ("epever-tracer.yaml", include_str!("../../models/epever-tracer.yaml")),
    ("fluvius-emucs.yaml", include_str!("../../models/fluvius-emucs.yaml")),
    ("growatt-inverter.yaml", include_str!("../../models/growatt-inverter.yaml")),
    ("honeywell-hpma115s0.yaml", include_str!("../../models/honeywell-hpma115s0.yaml")),
    ("nmea-gps.yaml", include_str!("../../models/nmea-gps.yaml")),
    ("nova-sds011.yaml", include_str!("../../models/nova-sds011.yaml")),
    ("peacefair-pzem-004t.yaml", include_str!("../../models/peacefair-pzem-004t.yaml")),
    ("peacefair-pzem-016.yaml", include_str!("../../models/peacefair-pzem-016.yaml")),
    ("peacefair-pzem-017.yaml", include_str!("../../models/peacefair-pzem-017.yaml")),
    ("plantower-pms5003.yaml", include_str!("../../models/plantower-pms5003.yaml")),
    ("plantower-pms7003.yaml", include_str!("../../models/plantower-pms7003.yaml")),
    ("renogy-rover.yaml", include_str!("../../models/renogy-rover.yaml")),
    ("senseair-s8.yaml", include_str!("../../models/senseair-s8.yaml")),
    ("ublox-gps.yaml", include_str!("../../models/ublox-gps.yaml")),
    ("victron-bmv.yaml", include_str!("../../models/victron-bmv.yaml")),
    ("victron-mppt.yaml", include_str!("../../models/victron-mppt.yaml")),
    ("winsen-mh-z19.yaml", include_str!("../../models/winsen-mh-z19.yaml")),
    ("xy-md02.yaml", include_str!("../../models/xy-md02.yaml")),
];
