//! placeholder
#[test]
fn compiles() {
    let _ =
        fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
}
