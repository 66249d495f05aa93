//! What a registry client needs to know of the registry it pulls from: its address, and
//! what to say when something fails. The `nixery` binary started by the tests ([`Server`])
//! and the container image run by the Docker engine
//! ([`super::nixery_container::NixeryContainer`]) are both registries, so the clients'
//! helpers ([`super::Docker::pull`], [`super::pull_and_unpack`], [`super::Client`]) work
//! with either.

use std::process::Command;

use super::process::{COMMAND_TIMEOUT, run_checked};
use super::server::Server;

/// A registry under test, reachable on 127.0.0.1.
pub trait Registry {
    /// `127.0.0.1:PORT`: what image references start with.
    fn addr(&self) -> String;

    /// `msg` followed by the registry's log tail, for the message of a failed assertion.
    fn context(&self, msg: &str) -> String;

    /// `ADDR/` + `name_and_tag`, e.g. `image("shell/hello:latest")`.
    fn image(&self, name_and_tag: &str) -> String {
        format!("{}/{name_and_tag}", self.addr())
    }

    /// Panics with `msg` and the registry's log tail.
    #[track_caller]
    fn fail(&self, msg: &str) -> ! {
        panic!("{}", self.context(msg))
    }

    /// Runs a client command (at most [`COMMAND_TIMEOUT`]) and returns its stdout; on
    /// failure panics with the command, its output and the registry's log tail.
    fn run(&self, cmd: &mut Command) -> String {
        run_checked(cmd, COMMAND_TIMEOUT).unwrap_or_else(|e| self.fail(&e))
    }
}

impl Registry for Server {
    fn addr(&self) -> String {
        Server::addr(self)
    }

    fn context(&self, msg: &str) -> String {
        Server::context(self, msg)
    }
}
