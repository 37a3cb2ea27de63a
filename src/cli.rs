//! The command line of the contract in DESIGN.md, as clap definitions. Parsing only; what
//! each command does lives in `commands`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::FsType;
use crate::nixos::nix::Style;
use crate::output::{ColorChoice, Format};

/// Make NixOS impermanence safe to roll out and easy to live with.
///
/// imperm resets the root at boot and keeps old roots, finds the state a wipe would lose,
/// says what to persist, and checks the persistence configuration.
#[derive(Debug, Parser)]
#[command(name = "imperm", version, about, long_about, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file [default: /etc/imperm/config.toml under --root; built-in template
    /// when absent]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Persisted set from `nix eval --json .#nixosConfigurations.HOST.config.environment.persistence`
    /// output ("-" for stdin); replaces the configuration file's [persistence]
    #[arg(long, global = true, value_name = "FILE")]
    pub persistence_json: Option<PathBuf>,

    /// Work on the tree mounted at DIR instead of / (paths in output stay as seen from /)
    #[arg(long, global = true, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,

    /// Output format
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
    pub format: Format,

    /// When to colour human output
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Host overview: configuration, filesystem, persisted set, snapshots, readiness
    ///
    /// Shows which configuration was loaded from where (file, Nix JSON, live bind mounts or
    /// the built-in server template), the filesystem type, each persistent storage path and
    /// whether it is a filesystem of its own, the size of the persisted set and the
    /// retention policy, and whether the host is ready for its first ephemeral boot (the
    /// configuration lints clean, every declared entry on the root is in its storage, the
    /// storage survives a reset, the reset's layout exists; on an ephemeral host also the
    /// last reset, snapshots, gc timer, baseline and what `check` finds), each reason with
    /// its state. `--format json` prints the same as one JSON document. Exit 0 whatever
    /// the answer: it is in the output.
    Status(StatusArgs),

    /// Unpersisted state since boot, grouped and classified, with suggestions (exit 1 when
    /// something needs persisting)
    ///
    /// With a baseline (`imperm baseline`, run right after boot) only what changed since is
    /// considered; without one, everything on the root that is neither persisted nor made
    /// by NixOS. This is the pre-reboot check.
    Check(DiscoverArgs),

    /// Raw added/removed/changed entries outside persisted paths
    ///
    /// Since the boot baseline, or against an old-root snapshot ("what did the last reset
    /// wipe?"). On btrfs, since the baseline snapshot, the diff searches the tree for inodes
    /// written since, so it costs what changed, not the size of the tree.
    Diff(DiffArgs),

    /// Like check, for a host whose root is not yet ephemeral: what would a wipe lose?
    /// (exit 1 when something needs persisting)
    ///
    /// Walks the whole root filesystem (metadata only, in parallel, never following a
    /// symlink or entering another mount) and reports everything that is neither persisted
    /// nor made again by NixOS at boot, grouped into the directories and files a person would
    /// persist, each with a verdict (persist, review, ephemeral, generated), the reason, the
    /// service it belongs to, and its size. `--format nix` prints the `persist` suggestions as
    /// a snippet for environment.persistence (or preservation with --style). Run it before a
    /// host's first ephemeral boot, with the persistence you plan to declare
    /// (--config or --persistence-json).
    Audit(DiscoverArgs),

    /// Record the root's state right after boot, so that check and diff leave out what
    /// NixOS activation wrote
    ///
    /// Writes a manifest to /run/imperm/baseline (every backend); where the root is a
    /// btrfs or bcachefs subvolume and imperm runs as root, also a read-only snapshot
    /// `.baseline` in the snapshot directory.
    Baseline(FsArgs),

    /// Missing-path failures from `journalctl -o json` output (exit 1 when any)
    ///
    /// Reads `journalctl -b -o json` (or --file), finds each failure caused by a missing or
    /// unreadable path, names its unit, looks the path up in the last reset's snapshot
    /// ("existed before the last reset") and says what to persist, with the `restore`
    /// command that brings the data back.
    Journal(JournalArgs),

    /// Old-root snapshots
    #[command(subcommand)]
    Snapshots(SnapshotsCommand),

    /// Alias of `snapshots ls`
    Ls(FsArgs),

    /// Alias of `snapshots gc`
    Gc(GcArgs),

    /// Boot-time root reset (initrd): snapshot the root, then give the system a blank one
    ///
    /// Mounts the filesystem's top level privately (or uses --mounted), takes the lock,
    /// snapshots the root subvolume and every subvolume nested in it read-only into the
    /// snapshot directory under a UTC name, verifies the snapshot, deletes the old root and
    /// creates a fresh one (empty, or a snapshot of --blank-snapshot). An interrupted reset
    /// is completed by running it again. Needs no /etc: every setting can be given as an
    /// option. Logs to stderr. On a tmpfs root there is nothing to do (exit 0).
    Reset(FsArgs),

    /// Bring files back from an old-root snapshot
    ///
    /// Copies files or whole directories out of an old-root snapshot, keeping owner, mode,
    /// timestamps, xattrs, and symlinks as symlinks: into the live root, or into the
    /// persistent storage at the matching place, ready for the persistence entry it prints.
    /// An existing target is kept aside (renamed `NAME.imperm-replaced-TIME`) with --force,
    /// and refused without it.
    Restore(RestoreArgs),

    /// What lies in the persistent storage that no declared entry covers (exit 1 when any)
    ///
    /// Walks every storage of the persisted set (without following a symlink or leaving
    /// its filesystem) and lists what no entry declares any more, or what another
    /// storage's mount hides, each with its size, owner and last change. `--quarantine`
    /// moves it (a rename) under `STORAGE/.imperm-stray/TIME/` with a manifest;
    /// `--restore TIME` puts it back. imperm never deletes any of it.
    Stray(StrayArgs),

    /// Many hosts at once over OpenSSH
    #[command(subcommand)]
    Fleet(FleetCommand),

    /// Copy declared state from the live root into persistent storage (exit 1 when
    /// something was not migrated)
    ///
    /// For every declared entry (or each PATH) that exists on the live root: copies it into
    /// the persistent storage at the matching place, exactly (contents, owner, group, mode,
    /// times, xattrs and ACLs, symlinks as symlinks, hard links linked, sparse files
    /// sparse, FIFOs and device nodes), parents made with the live parents' owner and mode,
    /// then compares every file's content on both sides (BLAKE3) before the copy takes its
    /// name. An entry already in the storage and the same is skipped; one that differs is
    /// refused, or with --force kept aside (NAME.imperm-replaced-TIME). A killed run is
    /// finished by the next one. Nothing on the live root is changed.
    Migrate(MigrateArgs),

    /// A terminal interface over check, audit, diff or journal: look, then persist or
    /// ignore with one key
    ///
    /// Shows the same result the plain command computes as a tree (units collapsed, each
    /// with its verdict as a letter and a colour, files, size), and a preview of the
    /// selected entry (the reason, where the verdict came from, a file's head). `p`
    /// persists the entry into --nix-file (as `persist add` does) or, without one, collects
    /// it for the Nix snippet printed on exit; `i` adds a glob to `[check] ignore` in the
    /// configuration file; `u` takes the last of these back; `r` restores the path from the
    /// last reset's old root (as `restore`), and the preview compares with it; `?` lists
    /// the keys. Nothing is written before a y on the question the last line asks. Needs a
    /// terminal on stdout (exit 2 otherwise: use the plain command).
    Browse(BrowseArgs),

    /// Edit a host's .nix configuration
    #[command(subcommand)]
    Persist(PersistCommand),

    /// Problems in the persistence configuration (exit 1 when any)
    ///
    /// Reports: persistent storage on the root filesystem (when the mount table is
    /// available); duplicate entries; an entry inside another persisted directory; a file
    /// also covered by a directory; /var/lib/private without mode 0700; container overlay
    /// storage persisted; more than 30 bind mounts, with parent directories that would
    /// merge them.
    Lint,

    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },

    /// Print the manual page (roff), or write one page per command into a directory
    ///
    /// Without --dir, prints imperm(1) on stdout. With --dir, writes imperm.1 and a page for
    /// every subcommand (imperm-reset.1, imperm-snapshots-gc.1, …), the pages imperm(1)
    /// refers to, ready for `man -l` or a package's man directory.
    Man {
        /// Write every page into DIR (created when missing) instead of printing imperm(1)
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args, Default, Clone)]
pub struct JournalArgs {
    /// Read this journal export (`journalctl -o json` output; "-" for stdin) instead of
    /// running journalctl
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// Read the previous boot's journal (`journalctl -b -1`)
    #[arg(long)]
    pub previous: bool,

    /// Look paths up in this old-root snapshot [default: the last reset's, see `snapshots ls`]
    #[arg(long, value_name = "SNAP")]
    pub against: Option<String>,

    #[command(flatten)]
    pub discover: DiscoverArgs,

    #[command(flatten)]
    pub fs: FsArgs,
}

#[derive(Debug, Args, Clone)]
pub struct RestoreArgs {
    /// Paths as seen from / on the host
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// Snapshot to restore from [default: the last reset's, see `snapshots ls`]
    #[arg(long, value_name = "SNAP")]
    pub from: Option<String>,

    /// Where to put them
    #[arg(long, value_enum, default_value_t = RestoreInto::Root)]
    pub into: RestoreInto,

    /// Put an existing target aside and restore anyway
    #[arg(long)]
    pub force: bool,

    #[command(flatten)]
    pub fs: FsArgs,
}

#[derive(Debug, Args, Clone)]
pub struct StrayArgs {
    /// Move what is stray under STORAGE/.imperm-stray/TIME/ (a rename; nothing is deleted)
    #[arg(long, conflicts_with = "restore")]
    pub quarantine: bool,

    /// Put back what the quarantine TIME moved (its directory's name, as printed)
    #[arg(long, value_name = "TIME")]
    pub restore: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// The status of many hosts in one table (exit 1 when one is not ready, has problems
    /// or did not answer)
    ///
    /// Runs `imperm status --format json` on every host over the user's own `ssh` (their
    /// ssh config, agent and jump hosts apply; it never prompts: BatchMode), several hosts
    /// at once, each within --timeout, and prints one row a host: filesystem, whether the
    /// root is already ephemeral, ready for the first ephemeral boot or why not, persisted
    /// entries, what the host's check finds to persist, snapshots, the last reset and
    /// problems. A host that is unreachable, has no imperm, answers something that is not
    /// a status or does not answer in time is a row with its error. `--format json`: an
    /// array of rows. Global options such as --root and --config are not sent to the
    /// hosts: each uses its own configuration.
    Status(FleetStatusArgs),
}

#[derive(Debug, Args, Clone)]
pub struct FleetStatusArgs {
    /// Hosts as ssh takes them: aliases of your ssh config, names, addresses, USER@HOST
    #[arg(value_name = "HOST")]
    pub hosts: Vec<String>,

    /// Read hosts from FILE ("-" for stdin): one a line, `#` starts a comment
    #[arg(long, value_name = "FILE")]
    pub hosts_file: Option<PathBuf>,

    /// Also the hosts a flake defines: the names of its nixosConfigurations (with `nix
    /// eval`, which needs flakes enabled or allows them here)
    #[arg(long, value_name = "FLAKE")]
    pub flake: Option<String>,

    /// Seconds a host has to answer, connection included; then its ssh is killed
    #[arg(long, value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,

    /// Hosts asked at the same time (32, as pssh and pdsh: each mostly waits on the
    /// network)
    #[arg(long, value_name = "N", default_value_t = 32,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
}

#[derive(Debug, Args, Clone)]
pub struct BrowseArgs {
    /// What `p` writes into (as `persist add --nix-file`); without it, `p` collects the
    /// entries and the snippet is printed on exit
    #[arg(long, global = true, value_name = "FILE")]
    pub nix_file: Option<PathBuf>,

    /// Where the old roots are: `r` restores from the last reset's, and the preview
    /// compares with it
    #[command(flatten)]
    pub fs: FsArgs,

    #[command(subcommand)]
    pub view: Option<BrowseView>,
}

/// What `browse` shows (default: check).
#[derive(Debug, Subcommand, Clone)]
pub enum BrowseView {
    /// What `check` finds (the default)
    Check(DiscoverArgs),
    /// What `audit` finds
    Audit(DiscoverArgs),
    /// What `diff` finds (its suggestions)
    Diff(DiffArgs),
    /// What `journal` finds (its suggestions)
    Journal(JournalArgs),
}

#[derive(Debug, Args, Default, Clone)]
pub struct DiscoverArgs {
    /// The module the `--format nix` snippet is for
    #[arg(long, value_enum, default_value_t)]
    pub style: Style,
}

#[derive(Debug, Args, Default, Clone)]
pub struct StatusArgs {
    /// Do not run `check` on an ephemeral host (it walks the root: seconds on a large one);
    /// its reason is then "not checked"
    #[arg(long)]
    pub no_check: bool,
}

#[derive(Debug, Args, Default, Clone)]
pub struct DiffArgs {
    /// Compare with this old-root snapshot (a name in the snapshot directory) instead of
    /// the boot baseline
    #[arg(long, value_name = "SNAP")]
    pub against: Option<String>,

    /// Compare by walking both trees, not through the btrfs generation search
    #[arg(long)]
    pub walk: bool,

    #[command(flatten)]
    pub discover: DiscoverArgs,

    #[command(flatten)]
    pub fs: FsArgs,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotsCommand {
    /// List old-root snapshots, newest first, with the retention rules that keep each
    ///
    /// Reads imperm's own UTC names and the legacy `YYYY-MM-DD_HH-MM-SS` names of
    /// bcache-impermanence; other names are listed as unrecognised and never deleted. Mounts
    /// the filesystem's top level privately (root needed), or uses --mounted DIR.
    Ls(FsArgs),
    /// Delete old-root snapshots the retention policy does not keep, oldest first
    ///
    /// The policy is `[retention]` (default: the last 5, one a week for 4 weeks, one a
    /// month). Never deleted: the newest snapshot, snapshots dated in the future, names
    /// imperm does not recognise, the snapshot of an interrupted reset. Deletes one at a time;
    /// a snapshot whose deletion is refused is skipped and named at the end (exit 2), the
    /// others still go; --dry-run shows every decision and deletes nothing.
    Gc(GcArgs),
    /// Mount an old-root snapshot read-only, to look at it with your own tools
    ///
    /// NAME as `snapshots ls` prints it [default: the last reset's snapshot]; DIR [default:
    /// /run/imperm/old-roots/NAME, made 0700 when missing]. Read-only, nosuid, nodev,
    /// noexec, in the host's mount namespace (every process sees it) until `snapshots
    /// umount`. Mounted there already: says so, exit 0. A DIR that is a symlink, is not
    /// empty, or has something else mounted on it is refused (exit 2), nothing done.
    Mount(MountArgs),
    /// Unmount old roots `snapshots mount` mounted
    ///
    /// A DIR (with a `/` in it) or a snapshot NAME (its place under /run/imperm/old-roots);
    /// none: every old root mounted under /run/imperm/old-roots. Only a mount of a snapshot
    /// of this filesystem is unmounted, never anything else; emptied directories under
    /// /run/imperm/old-roots are removed. One in use is not unmounted (exit 1) unless
    /// --lazy.
    Umount(UmountArgs),
}

#[derive(Debug, Args)]
pub struct MountArgs {
    /// The snapshot, as `snapshots ls` prints it [default: the last reset's]
    #[arg(value_name = "NAME")]
    pub name: Option<String>,

    /// Where to mount it [default: /run/imperm/old-roots/NAME]
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,

    #[command(flatten)]
    pub fs: FsArgs,
}

#[derive(Debug, Args)]
pub struct UmountArgs {
    /// A directory (with a `/` in it) or a snapshot's name [default: every old root
    /// under /run/imperm/old-roots]
    #[arg(value_name = "DIR|NAME")]
    pub target: Option<std::ffi::OsString>,

    /// Detach an old root in use now (it is freed when the last file in it is closed)
    #[arg(long)]
    pub lazy: bool,

    #[command(flatten)]
    pub fs: FsArgs,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Show every snapshot with keep/delete and why; delete nothing
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub fs: FsArgs,
}

/// Where the root and its snapshots live; each option overrides `[filesystem]`.
#[derive(Debug, Args, Default, Clone)]
pub struct FsArgs {
    /// The filesystem's top level is already mounted at DIR (else it is mounted privately)
    #[arg(long, value_name = "DIR")]
    pub mounted: Option<PathBuf>,

    /// Filesystem type
    #[arg(long = "fs", value_enum, value_name = "TYPE")]
    pub fs_type: Option<FsType>,

    /// Device holding the filesystem (bcachefs: several joined with `:`)
    #[arg(long, value_name = "DEV")]
    pub device: Option<String>,

    /// Root subvolume, relative to the top level [default: @root]
    #[arg(long, value_name = "NAME")]
    pub root_subvolume: Option<String>,

    /// Snapshot directory, relative to the top level [default: @snapshots]
    #[arg(long, value_name = "NAME")]
    pub snapshot_dir: Option<String>,

    /// Subvolume a fresh root is a snapshot of [default: none, an empty root]
    #[arg(long, value_name = "NAME")]
    pub blank_snapshot: Option<String>,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Paths to migrate [default: every declared entry]
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Say what would be copied, skipped or refused, and whether the storage has room;
    /// change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Replace a storage copy that differs, keeping it aside
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub fs: FsArgs,
}

#[derive(Debug, Subcommand)]
pub enum PersistCommand {
    /// Add entries to a host's persistence in a .nix file, keeping everything else as is
    ///
    /// Finds every place the host declares persistence, however it is written:
    /// impermanence's `environment.persistence."STORAGE"`, preservation's
    /// `preservation.preserveAt."STORAGE"`, imperm's `services.imperm` (nested sets or
    /// dotted paths, behind `lib.mkIf`/`mkMerge`, under `config`). The entries go into the
    /// host's own literal `directories` or `files` (or `users.NAME.…`) of the storage,
    /// created when missing. Entries already declared, or inside a directory the storage
    /// persists, change nothing. Without --storage: the storage the file declares when it
    /// declares exactly one (said so), else /persist. What cannot be seen without
    /// evaluating (a computed list, an unresolved name, an option of the host's own,
    /// another system's configuration) is left alone: the snippet to add by hand is
    /// printed and the exit code is 2. The result is parsed again before it is written,
    /// atomically.
    Add(PersistAddArgs),
}

#[derive(Debug, Args, Clone)]
pub struct PersistAddArgs {
    /// Absolute paths (with --user: relative to the home directory)
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// The host configuration to edit
    #[arg(long, value_name = "FILE")]
    pub nix_file: PathBuf,
    /// Persistent storage path [default: the one storage the file declares (in
    /// environment.persistence, preservation.preserveAt or services.imperm), else /persist]
    #[arg(long, value_name = "PATH")]
    pub storage: Option<PathBuf>,
    /// Add to users.NAME (paths relative to the home directory)
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// The paths are files, not directories
    #[arg(long)]
    pub file: bool,
    /// Print a unified diff; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Migrate each path into the storage first (as `imperm migrate PATH`), then write the
    /// entries: nothing is written when a path could not be migrated
    #[arg(long = "move")]
    pub move_paths: bool,
    /// Edit a file its owner may not write (keeping its mode), or one with other hard
    /// links (written in place, so that every link sees the change)
    #[arg(long)]
    pub force: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RestoreInto {
    /// The live root, where the path was
    Root,
    /// Persistent storage, ready for the persistence entry
    Persist,
}
