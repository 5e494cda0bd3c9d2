//! `authflow-echo`: listens on `AUTHFLOW_ECHO_LISTEN` (default 127.0.0.1:8082).

fn main() {
    let addr =
        std::env::var("AUTHFLOW_ECHO_LISTEN").unwrap_or_else(|_| "127.0.0.1:8082".to_owned());
    match authflow_echo::EchoServer::start(&addr) {
        Ok(server) => {
            println!("authflow-echo listening on {}", server.addr);
            server.join();
        }
        Err(e) => {
            eprintln!("authflow-echo: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    }
}
