//! The simulator's durable message log: one JSON line per accepted message,
//! written (and flushed to the operating system) before the server ack goes
//! out, so a message a device saw acknowledged is always in the log, even if
//! the simulator is killed right after.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufRead, BufReader, Write},
    path::{Path, PathBuf},
    sync::Mutex,
};

use crate::protocol::LoggedMessage;

pub struct MessageLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl MessageLog {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn append(&self, entry: &LoggedMessage) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry).expect("log entries serialise");
        line.push(b'\n');
        let mut file = self.file.lock().expect("log lock");
        // One write per line on an O_APPEND file: lines never interleave.
        file.write_all(&line)
    }

    /// Every entry so far (a torn last line, from a kill mid-write, is skipped).
    pub fn read_all(&self) -> io::Result<Vec<LoggedMessage>> {
        let file = File::open(&self.path)?;
        let mut entries = Vec::new();
        for line in BufReader::new(file).lines() {
            if let Ok(entry) = serde_json::from_str(&line?) {
                entries.push(entry);
            }
        }
        Ok(entries)
    }
}
