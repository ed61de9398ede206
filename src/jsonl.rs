//! Native JSONL runs: images from a folder, rows from a file or stdin, output written and
//! flushed row by row, and a rerun on the same output resuming where the last run stopped.

use crate::caption_run::{CaptionRun, ImageSource, Progress, RowResult};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::generate::Flow;
use crate::rows::{is_output_of, Line};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Larger image files are refused before they are read (no photo is this big), unless the
/// caller sets another limit (`--max-image-mib`).
pub const MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;

/// Images named by relative paths under a root folder (or absolute paths).
pub struct FolderImages {
    root: PathBuf,
    max_bytes: u64,
}

impl FolderImages {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            max_bytes: MAX_IMAGE_FILE_BYTES,
        }
    }

    /// Refuses image files larger than `max_bytes` (default [`MAX_IMAGE_FILE_BYTES`]).
    pub fn with_max_bytes(self, max_bytes: u64) -> Self {
        Self { max_bytes, ..self }
    }

    fn read_blocking(&self, path: &str) -> std::result::Result<Vec<u8>, String> {
        if path.contains("://") {
            return Err(format!(
                "image '{path}' is a URL; Captioner only reads local files"
            ));
        }
        read_image_file(&self.root.join(path), path, self.max_bytes)
    }
}

/// Reads the image file at `full` (named `name` in messages): a regular file of at most
/// `max_bytes` ([`MAX_IMAGE_FILE_BYTES`] by default). Anything else is refused before it is opened: a device such as
/// `/dev/zero` never ends and its length says 0, and opening a FIFO waits for a writer that
/// may never come. A file that grows past the limit while it is read stops at the limit.
pub fn read_image_file(
    full: &Path,
    name: &str,
    max_bytes: u64,
) -> std::result::Result<Vec<u8>, String> {
    let meta = std::fs::metadata(full).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => {
            format!("image '{name}' not found (looked for {})", full.display())
        }
        _ => format!("image '{name}': {e} ({})", full.display()),
    })?;
    if meta.is_dir() {
        return Err(format!("image '{name}' is a folder, not a file"));
    }
    if !meta.is_file() {
        return Err(format!(
            "image '{name}' is not a regular file (a device, pipe or socket); save the image to \
             a file and name that"
        ));
    }
    let too_large = |bytes: u64| {
        format!(
            "image '{name}' is too large: {} MiB (the limit is {} MiB; --max-image-mib sets it)",
            // (rounded up: a file over the limit never reads as equal to it)
            bytes.div_ceil(1 << 20),
            max_bytes >> 20
        )
    };
    if meta.len() > max_bytes {
        return Err(too_large(meta.len()));
    }
    let failed = |e: io::Error| format!("image '{name}': {e} ({})", full.display());
    let mut bytes = Vec::new();
    File::open(full)
        .and_then(|f| f.take(max_bytes.saturating_add(1)).read_to_end(&mut bytes))
        .map_err(failed)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

impl ImageSource for FolderImages {
    async fn read(&mut self, path: &str) -> std::result::Result<Vec<u8>, String> {
        self.read_blocking(path)
    }
}

/// Where rows come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Stdin,
    File(PathBuf),
}

/// Where rows go.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Stdout,
    /// A file: created, or resumed when it holds the start of this input's output.
    File(PathBuf),
}

impl Input {
    /// `-` is stdin.
    pub fn from_arg(arg: &Path) -> Self {
        if arg == Path::new("-") {
            Input::Stdin
        } else {
            Input::File(arg.to_path_buf())
        }
    }
}

impl Output {
    /// `-` is stdout.
    pub fn from_arg(arg: &Path) -> Self {
        if arg == Path::new("-") {
            Output::Stdout
        } else {
            Output::File(arg.to_path_buf())
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub progress: Progress,
    /// Rows found already done in the output file and kept.
    pub resumed: usize,
    /// Stopped by the cancel flag before the end of the input.
    pub interrupted: bool,
}

fn io_error(path: &Path, source: io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The longest line read from a JSONL file or the output being resumed. A row names its
/// images; it does not hold them, and no row is near this long. Without a bound, a device
/// such as `/dev/zero` given as the input (or piped into stdin) was one line read until the
/// memory ran out.
pub const MAX_LINE_BYTES: u64 = 64 << 20;

/// An output line is its input row plus a caption or an error: this much longer at most.
const OUTPUT_MARGIN: u64 = 1 << 20;

/// Reads one line (with its `\n`, if any) into `buf`, refusing a line past `max` bytes
/// ([`MAX_LINE_BYTES`] for the input); 0 at the end of the input.
fn read_line(
    reader: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    (name, line_no): (&Path, usize),
    max: u64,
) -> Result<usize> {
    buf.clear();
    let n = reader
        .take(max + 1)
        .read_until(b'\n', buf)
        .map_err(|e| io_error(name, e))?;
    if n as u64 > max {
        return Err(Error::Invalid(format!(
            "{} line {line_no} is longer than {} MiB: a JSONL row names its images, it does not \
             hold them. Is this a JSONL file?",
            name.display(),
            max >> 20
        )));
    }
    Ok(n)
}

/// Lines of the input with their 1-based numbers, as raw bytes (so a line that is not UTF-8
/// is reported, not lost).
struct Lines {
    reader: Box<dyn BufRead>,
    name: PathBuf,
    line_no: usize,
}

impl Lines {
    fn next(&mut self) -> Result<Option<(usize, Line)>> {
        let mut buf = Vec::new();
        let n = read_line(
            &mut self.reader,
            &mut buf,
            (&self.name, self.line_no + 1),
            MAX_LINE_BYTES,
        )?;
        if n == 0 {
            return Ok(None);
        }
        self.line_no += 1;
        let line = Line::from_bytes(&buf, self.line_no);
        Ok(Some((self.line_no, line)))
    }

    /// The next line that holds a row (blank lines produce no output).
    fn next_row(&mut self) -> Result<Option<(usize, Line)>> {
        while let Some((n, line)) = self.next()? {
            if !matches!(line, Line::Blank) {
                return Ok(Some((n, line)));
            }
        }
        Ok(None)
    }
}

fn open_input(input: &Input) -> Result<Lines> {
    Ok(match input {
        Input::Stdin => Lines {
            reader: Box::new(BufReader::new(io::stdin())),
            name: "<stdin>".into(),
            line_no: 0,
        },
        Input::File(path) => Lines {
            reader: Box::new(BufReader::new(
                File::open(path).map_err(|e| io_error(path, e))?,
            )),
            name: path.clone(),
            line_no: 0,
        },
    })
}

/// Rows in a JSONL file (lines that are not blank by [`crate::rows::is_blank`], the reader's
/// rule), counted in a quick first pass for the time left.
pub fn count_rows(path: &Path) -> Result<usize> {
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let (mut rows, mut line_no) = (0, 0);
    loop {
        let n = read_line(&mut reader, &mut buf, (path, line_no + 1), MAX_LINE_BYTES)?;
        if n == 0 {
            return Ok(rows);
        }
        line_no += 1;
        if !crate::rows::is_blank(&buf, line_no) {
            rows += 1;
        }
    }
}

/// Checks an existing output file against the input: how many rows it holds that are the
/// output of the input's first rows, and the byte length of those complete lines. A torn last
/// line (a killed run) is not counted and will be overwritten.
fn resume_point(output: &Path, input: &mut Lines, batch: &CaptionRun) -> Result<(usize, u64)> {
    let file = File::open(output).map_err(|e| io_error(output, e))?;
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let (mut rows, mut bytes) = (0usize, 0u64);
    loop {
        // (an output line may be a little longer than the input line it came from)
        let max = MAX_LINE_BYTES + OUTPUT_MARGIN;
        let n = read_line(&mut reader, &mut buf, (output, rows + 1), max)?;
        if n == 0 || buf.last() != Some(&b'\n') {
            return Ok((rows, bytes));
        }
        let out_line = rows + 1;
        let text = String::from_utf8_lossy(&buf);
        let Some((line_no, line)) = input.next_row()? else {
            return Err(Error::Invalid(format!(
                "{} has more rows than the input {}: it is not this input's output. Delete it, \
                 choose another output, or pass --restart to overwrite it",
                output.display(),
                input.name.display()
            )));
        };
        if !is_output_of(&text, &line, batch.options()) {
            return Err(Error::Invalid(format!(
                "{} line {out_line} is not the output of {} line {line_no}, so the run cannot \
                 resume from it. Delete it, choose another output, or pass --restart to overwrite it",
                output.display(),
                input.name.display()
            )));
        }
        rows += 1;
        bytes += n as u64;
    }
}

/// Runs `batch` over `input`, writing each output row to `output` as soon as it is done.
///
/// An existing output file that holds the output of the input's first rows is resumed (its rows
/// kept, the rest appended) unless `restart`. `cancel` is checked between rows: the output then
/// holds every row done so far, and a rerun resumes. `on_row` is called after every row.
#[allow(clippy::too_many_arguments)]
pub fn run(
    engine: &Engine,
    batch: &mut CaptionRun,
    input: &Input,
    output: &Output,
    images: &mut FolderImages,
    restart: bool,
    cancel: &AtomicBool,
    on_row: &mut dyn FnMut(&Progress, &RowResult),
) -> Result<Summary> {
    if let (Input::File(i), Output::File(o)) = (input, output) {
        if let (Ok(a), Ok(b)) = (i.canonicalize(), o.canonicalize()) {
            if a == b {
                return Err(Error::Invalid(format!(
                    "the output {} is the input file; write to another file",
                    o.display()
                )));
            }
        }
    }
    // Counting reads the input once more: only a regular file can be read twice (a FIFO
    // would be emptied by the count and its rows lost).
    if let Input::File(path) = input {
        if path.metadata().is_ok_and(|m| m.is_file()) {
            batch.set_total(Some(count_rows(path)?));
        }
    }
    let mut lines = open_input(input)?;
    let mut resumed = 0;
    let mut sink: Box<dyn Write> = match output {
        Output::Stdout => Box::new(io::stdout().lock()),
        Output::File(path) => {
            let exists = path.metadata().map(|m| m.len() > 0).unwrap_or(false);
            let mut file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(path)
                .map_err(|e| io_error(path, e))?;
            let keep = if exists && !restart {
                let (rows, bytes) = resume_point(path, &mut lines, batch)?;
                resumed = rows;
                bytes
            } else {
                0
            };
            file.set_len(keep).map_err(|e| io_error(path, e))?;
            file.seek(SeekFrom::End(0)).map_err(|e| io_error(path, e))?;
            Box::new(file)
        }
    };
    batch.count_resumed(resumed);
    let out_name = match output {
        Output::Stdout => PathBuf::from("<stdout>"),
        Output::File(p) => p.clone(),
    };

    let mut interrupted = false;
    let mut on_text = |_: &str| Flow::Continue;
    while let Some((_, line)) = lines.next_row()? {
        if cancel.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        let Some(result) = pollster::block_on(batch.next(engine, line, images, &mut on_text))
        else {
            continue;
        };
        // One write per row, then a flush: a killed run leaves whole lines (at most a torn last
        // one, which a resume overwrites).
        let mut record = result.line.clone().into_bytes();
        record.push(b'\n');
        sink.write_all(&record)
            .and_then(|_| sink.flush())
            .map_err(|e| io_error(&out_name, e))?;
        on_row(&batch.progress(), &result);
    }
    Ok(Summary {
        progress: batch.progress(),
        resumed,
        interrupted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_row_count_and_the_reader_agree_on_blank_lines() {
        let text = "\u{feff}\n{\"image\": \"a.jpg\"}\r\n \t\r\n\u{85}\n\u{a0}\n\u{b}\n\u{c}\n\n\u{2028}\nnot json\n\u{feff}\n";
        let mut bytes = text.as_bytes().to_vec();
        bytes.push(0xff); // and a last line that is not UTF-8
        let path =
            std::env::temp_dir().join(format!("captioner-count-{}.jsonl", std::process::id()));
        std::fs::write(&path, &bytes).expect("write");
        let rows = bytes
            .split_inclusive(|&b| b == b'\n')
            .enumerate()
            .filter(|(i, line)| !matches!(Line::from_bytes(line, i + 1), Line::Blank))
            .count();
        let counted = count_rows(&path).expect("count");
        std::fs::remove_file(&path).ok();
        // The row, U+0085, U+00A0, VT, FF, U+2028, "not json", a BOM past line 1, the bytes.
        assert_eq!(rows, 9);
        assert_eq!(counted, rows);
    }
}
