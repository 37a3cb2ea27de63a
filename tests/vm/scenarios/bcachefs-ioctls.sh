#!/bin/sh
# bcachefs-ioctls: imperm's bcachefs backend on a real bcachefs, through imperm itself:
# reset (a root with nested subvolumes, odd names, and symlinks planted where a delete
# that follows them would destroy another subvolume), snapshots ls, snapshots gc, restore
# from an old root, diff --walk, snapshots mount and umount; the refusals; and the attacks of issue 11 (symlinks at
# every name, names with a newline and non-UTF-8 bytes, a read-only snapshot as the
# target, a destroy racing a rename).
#
# Assumptions (what a harness gives the guest):
# - it runs as root in the guest under busybox sh (busybox's applets on PATH), with /proc,
#   /sys, /dev (devtmpfs) and a writable /tmp mounted;
# - the kernel has bcachefs loaded (Debian's 6.12; DESIGN.md gives the module order);
# - `imperm` and `bchsubvol` (tests/vm/scenarios/bchsubvol.rs, built with plain rustc)
#   are on PATH with the libraries they link; there is no `bcachefs` program (checked:
#   imperm must need none);
# - $1 (default /dev/vdb) is a fresh copy of the blank bcachefs fixture
#   (../shared/fixtures/bcachefs-blank-1g.img.zst, label `nixos`), not mounted. The
#   scenario mounts it at /mnt/top itself to prepare and to inspect (bcachefs shares the
#   superblock between mounts), and unmounts it at the end.
# Output: `ok - …` per check, `not ok - …` and exit 1 at the first failure, and
# `PASS bcachefs-ioctls` as the last line. imperm's own output is shown indented (`  | `).

DEV=${1:-/dev/vdb}
T=/mnt/top
R="--fs bcachefs --device $DEV --root-subvolume @root --snapshot-dir @snapshots"
NL=$(printf 'new\nline')
BAD=$(printf 'bad\377name')
export IMPERM_NOW

ok() { echo "ok - $*"; }
fail() {
  echo "not ok - $*"
  exit 1
}
# Runs a command, keeps its stdout in /tmp/out, stderr in /tmp/err and status in $rc, and
# shows both indented.
run() {
  "$@" >/tmp/out 2>/tmp/err
  rc=$?
  sed 's/^/  | /' /tmp/out /tmp/err
}
want_rc() { [ "$rc" = "$1" ] || fail "$2: exit $rc, wanted $1"; }
has() { grep -qF -- "$2" "$1" || fail "$3: $(basename "$1") lacks: $2"; }
# The error is one line (`imperm: …`); progress lines (`imperm reset: …`) may precede it.
one_line_err() {
  [ "$(grep -v '^imperm [a-z]*: ' /tmp/err | wc -l)" = 1 ] || fail "$1: the error is not one line"
  grep -q '^imperm: ' /tmp/err || fail "$1: no error line"
}
subvol() { bchsubvol id "$1" 2>/dev/null; }
# How many entries (dot-files aside) directory $1 has, whatever their names hold.
count() {
  set -- "$1"/*
  [ -e "$1" ] || [ -L "$1" ] || set --
  echo $#
}
# The snapshot-like names in directory $1 (those starting with a digit), on one line.
dated() { (cd "$1" && echo [0-9]*); }
is_subvol() { [ "$(subvol "$1")" != "$(subvol "$(dirname "$1")")" ]; }
# What must never change: the other subvolume, its data, and its id.
precious_ok() {
  [ "$(cat $T/@precious/data 2>/dev/null)" = keep ] || fail "$1: @precious/data lost"
  [ "$(subvol $T/@precious)" = "$PRECIOUS_ID" ] || fail "$1: @precious is not the same subvolume"
}
# The tree below the top level, names and symlink targets, for "nothing changed".
tree() { (cd $T && find . -xdev | sort | while IFS= read -r p; do
  if [ -L "$p" ]; then echo "$p -> $(readlink "$p")"; else echo "$p"; fi
done | md5sum); }

command -v bcachefs >/dev/null && fail "a bcachefs program is on PATH: the scenario must prove imperm needs none"
ok "no bcachefs program in the guest"
mkdir -p $T /mnt/root
mount -t bcachefs "$DEV" $T || fail "mount $DEV"

# --- first boot: no root yet ----------------------------------------------------------
IMPERM_NOW=2026-01-01T00:00:00Z
run imperm reset $R
want_rc 0 "first reset"
has /tmp/out "created a fresh one" "first reset"
is_subvol $T/@root || fail "@root is not a subvolume"
ok "the first reset created @root (subvolume $(subvol $T/@root))"

bchsubvol create $T/@precious && echo keep >$T/@precious/data || fail "make @precious"
PRECIOUS_ID=$(subvol $T/@precious)

# bcachefs itself (no imperm), recorded rather than asserted (a kernel update may change
# it): a subvolume stays ENOTEMPTY after a subvolume nested in it was destroyed while that
# one was still in the caches (here: dirty), until it is written back (sync) and, a moment
# later, evicted. imperm's delete syncs and retries for up to 2.5 s: without that, the
# resets below fail at their first nested subvolume.
bchsubvol create $T/fact && bchsubvol create $T/fact/inner || fail "make fact"
dd if=/dev/zero of=$T/fact/inner/f bs=1M count=50 2>/dev/null
bchsubvol destroy $T/fact/inner || fail "destroy fact/inner"
if bchsubvol destroy $T/fact 2>/tmp/err; then
  echo "# fact: the parent was destroyed at once"
else
  echo "# fact: the parent at once: $(cat /tmp/err)"
  sync
  i=0
  while ! bchsubvol destroy $T/fact 2>/dev/null && [ $i -lt 100 ]; do
    i=$((i + 1))
    sleep 0.03
  done
  echo "# fact: destroyed after sync and $i retries 30 ms apart"
fi
[ -e $T/fact ] && fail "fact: not destroyed 3 s after sync"

# A root as a used system leaves it: files, odd names, nested subvolumes (two deep), and
# symlinks to another subvolume where nested ones usually are.
fill_root() {
  mkdir -p $T/@root/etc $T/@root/home $T/@root/var/lib
  echo "$1" >$T/@root/etc/day
  echo "$1" >"$T/@root/home/$NL"
  echo "$1" >"$T/@root/home/$BAD"
  ln -sfn /mnt/top/@precious $T/@root/var/lib/portables
  ln -sfn ../../../@precious $T/@root/var/lib/machines-link
  bchsubvol create $T/@root/var/lib/machines || fail "nested subvolume"
  echo nested >$T/@root/var/lib/machines/file
  bchsubvol create $T/@root/var/lib/machines/inner || fail "nested subvolume, two deep"
  echo inner >$T/@root/var/lib/machines/inner/file
  ln -sfn /mnt/top/@precious $T/@root/var/lib/machines/inner/link
  mkdir -p $T/@root/srv
  bchsubvol create "$T/@root/srv/$BAD" && bchsubvol create "$T/@root/srv/$NL" ||
    fail "nested subvolumes with odd names"
  echo odd >"$T/@root/srv/$BAD/f"
  echo odd >"$T/@root/srv/$NL/f"
}

# --- boots 2 to 6 ---------------------------------------------------------------------
for day in 02 03 04 05 06; do
  fill_root "before $day"
  IMPERM_NOW=2026-01-${day}T00:00:00Z
  run imperm reset $R
  want_rc 0 "reset of day $day"
  snap=$T/@snapshots/202601${day}T000000Z
  has /tmp/out "old root kept in" "reset $day"
  for n in var/lib/machines 'srv/bad\xffname' 'srv/new\x0aline'; do
    has /tmp/err "nested subvolume @root/$n on $DEV is not in snapshot @snapshots/202601${day}T000000Z" "reset $day"
  done
  [ "$(cat $snap/etc/day)" = "before $day" ] || fail "snapshot $day: etc/day"
  [ "$(cat "$snap/home/$NL")" = "before $day" ] || fail "snapshot $day: name with a newline"
  [ "$(cat "$snap/home/$BAD")" = "before $day" ] || fail "snapshot $day: non-UTF-8 name"
  [ "$(readlink $snap/var/lib/portables)" = /mnt/top/@precious ] || fail "snapshot $day: symlink"
  [ -e $snap/var/lib/machines ] && fail "snapshot $day: a nested subvolume left an entry"
  [ -e "$snap/srv/$BAD" ] && fail "snapshot $day: a nested subvolume left an entry"
  touch $snap/etc/new 2>/tmp/err && fail "snapshot $day is writable"
  grep -q "Read-only file system" /tmp/err || fail "snapshot $day: $(cat /tmp/err)"
  is_subvol $snap || fail "snapshot $day is not a subvolume"
  [ -z "$(ls -A $T/@root)" ] || fail "reset $day: the new root is not empty"
  is_subvol $T/@root || fail "reset $day: the new root is not a subvolume"
  precious_ok "reset $day"
  ok "reset $day: old root (nested subvolumes two deep and with odd names, odd names, symlinks to @precious) in a read-only snapshot, fresh @root, @precious untouched"
done

# The same command again at once: the fresh root is left alone.
run imperm reset $R
want_rc 0 "second reset of an untouched root"
has /tmp/out "nothing to do" "second reset"
[ "$(count $T/@snapshots)" = 5 ] || fail "a second reset took a snapshot"
ok "a second reset of the fresh root does nothing"

# --- snapshots ls ---------------------------------------------------------------------
IMPERM_NOW=2026-01-07T00:00:00Z
run imperm snapshots ls $R
want_rc 0 "snapshots ls"
for day in 02 03 04 05 06; do has /tmp/out "202601${day}T000000Z" "ls"; done
run imperm --format json snapshots ls $R
want_rc 0 "snapshots ls --format json"
has /tmp/out '"name": "20260106T000000Z"' "ls json"
ok "snapshots ls lists the five old roots"

# --- snapshots gc, with a symlink and a plain directory planted among the snapshots -----
ln -s ../@precious $T/@snapshots/20250101T000000Z
mkdir $T/@snapshots/20250102T000000Z && echo mine >$T/@snapshots/20250102T000000Z/file
bchsubvol snapshot -r $T/@precious "$T/@snapshots/$NL" && bchsubvol snapshot -r $T/@precious "$T/@snapshots/$BAD" ||
  fail "snapshots with odd names"
printf '[retention]\nkeep_last = 2\n' >/tmp/gc.toml
run imperm --config /tmp/gc.toml snapshots gc --dry-run $R
want_rc 0 "gc --dry-run"
[ "$(count $T/@snapshots)" = 9 ] || fail "gc --dry-run deleted something"
run imperm --config /tmp/gc.toml snapshots gc $R
want_rc 0 "gc"
left=$(dated $T/@snapshots)
[ "$left" = "20250101T000000Z 20250102T000000Z 20260105T000000Z 20260106T000000Z" ] ||
  fail "gc left: $left"
[ "$(cat "$T/@snapshots/$NL/data")" = keep ] || fail "gc: a snapshot named with a newline is gone"
[ "$(cat "$T/@snapshots/$BAD/data")" = keep ] || fail "gc: a snapshot with a non-UTF-8 name is gone"
[ -L $T/@snapshots/20250101T000000Z ] || fail "gc: the planted symlink is gone"
[ "$(cat $T/@snapshots/20250102T000000Z/file)" = mine ] || fail "gc: the plain directory changed"
precious_ok "gc"
run imperm --config /tmp/gc.toml snapshots gc $R
want_rc 0 "gc again"
[ "$(count $T/@snapshots)" = 6 ] || fail "gc again deleted more"
ok "gc deleted exactly 0102, 0103, 0104; kept the symlink, the plain directory, snapshots with odd names and @precious"

# --- restore and diff --walk against an old root, the fresh root mounted as at boot ---
mount --bind $T/@root /mnt/root || fail "bind the root"
mkdir -p /mnt/root/etc /mnt/root/home
echo "written after boot" >/mnt/root/etc/after
run imperm --root /mnt/root restore /etc/day --from 20260105T000000Z $R
want_rc 0 "restore"
[ "$(cat /mnt/root/etc/day)" = "before 05" ] || fail "restore: etc/day"
run imperm --root /mnt/root restore "/home/$BAD" "/home/$NL" $R
want_rc 0 "restore of odd names from the last reset's snapshot"
[ "$(cat "/mnt/root/home/$BAD")" = "before 06" ] || fail "restore: non-UTF-8 name"
[ "$(cat "/mnt/root/home/$NL")" = "before 06" ] || fail "restore: name with a newline"
ok "restore brought /etc/day back from 20260105T000000Z, and odd names from the last reset"

run imperm --root /mnt/root --format json diff --walk --against 20260106T000000Z $R
want_rc 0 "diff --walk"
has /tmp/out '"/etc/after"' "diff"
has /tmp/out '"/var/lib/portables"' "diff"
grep -qF '"/etc/day"' /tmp/out || fail "diff: /etc/day (content changed) is missing"
ok "diff --walk against 20260106T000000Z names the added, removed and changed paths"
umount /mnt/root

# --- old roots at hand: snapshots mount / umount -------------------------------------
# bcachefs has no subvol= option: imperm clones the snapshot's directory out of its
# private top level and makes the clone read-only before it is attached.
mkdir -p /run
O=/run/imperm/old-roots
run imperm snapshots mount $R
want_rc 0 "snapshots mount (the last reset's)"
[ "$(cat $O/20260106T000000Z/etc/day)" = "before 06" ] || fail "snapshots mount: etc/day"
opts=$(awk -v o=$O/20260106T000000Z '$5 == o { print $6 }' /proc/self/mountinfo)
for want in ro nosuid nodev noexec; do
  echo ",$opts," | grep -qF ",$want," || fail "snapshots mount: not $want ($opts)"
done
(echo x >$O/20260106T000000Z/etc/day) 2>/tmp/werr && fail "snapshots mount: the old root is writable"
has /tmp/werr "Read-only" "a write into the old root"
run imperm snapshots mount $R
want_rc 0 "snapshots mount again"
has /tmp/out "already; nothing was done" "snapshots mount again"
[ "$(awk -v o=$O/20260106T000000Z '$5 == o' /proc/self/mountinfo | wc -l)" = 1 ] ||
  fail "snapshots mount again: mounted twice"
mkdir -p /mnt/look
run imperm snapshots mount 20260105T000000Z /mnt/look $R
want_rc 0 "snapshots mount NAME DIR"
[ "$(cat /mnt/look/etc/day)" = "before 05" ] || fail "snapshots mount NAME DIR: etc/day"
run imperm --config /tmp/gc.toml --format json snapshots gc --dry-run $R
want_rc 0 "gc --dry-run with old roots mounted"
has /tmp/out '"mounted at /mnt/look"' "gc --dry-run with old roots mounted"
mkdir -p $O/foreign && mount -t tmpfs keepme $O/foreign || fail "mount a tmpfs under $O"
run imperm snapshots umount $R
want_rc 0 "snapshots umount"
[ -e $O/20260106T000000Z ] && fail "snapshots umount: the place is still there"
awk -v o=$O/foreign '$5 == o' /proc/self/mountinfo | grep -q . || fail "snapshots umount: the tmpfs was unmounted"
has /tmp/out "left alone: $O/foreign" "snapshots umount"
run imperm snapshots umount /mnt/look $R
want_rc 0 "snapshots umount DIR"
awk '$5 == "/mnt/look"' /proc/self/mountinfo | grep -q . && fail "snapshots umount DIR: still mounted"
umount $O/foreign
precious_ok "snapshots mount"
ok "snapshots mount: the last reset's and a named old root, read-only, once; umount took only them"

# --- refusals: nothing changes --------------------------------------------------------
refused() { # WHAT TEXT: reset must stop with one line naming @root, and change nothing
  before=$(tree)
  run imperm reset $R
  want_rc 2 "$1"
  one_line_err "$1"
  has /tmp/err "$2" "$1"
  has /tmp/err "nothing was done" "$1"
  [ "$(tree)" = "$before" ] || fail "$1: the tree changed"
  precious_ok "$1"
  ok "refused: $1"
}
mv $T/@root $T/@root.real
ln -s @precious $T/@root
refused "@root is a symlink to another subvolume" "@root on $DEV is not a subvolume (a symlink)"
rm $T/@root
mkdir $T/@root && echo plain >$T/@root/file
refused "@root is a plain directory" "@root on $DEV is not a subvolume (a plain directory)"
rm -r $T/@root
mv $T/@root.real $T/@root
mount --bind $T/@root /mnt/root
refused "@root is mounted" "is mounted at /mnt/root"
umount /mnt/root
ln -s @precious $T/@blank
before=$(tree)
run imperm reset $R --blank-snapshot @blank
want_rc 2 "blank snapshot a symlink"
has /tmp/err "not a subvolume (a symlink)" "blank snapshot a symlink"
[ "$(tree)" = "$before" ] || fail "blank snapshot a symlink: the tree changed"
rm $T/@blank
ok "refused: the blank snapshot is a symlink"

# --- attacks --------------------------------------------------------------------------
# Symlinks at the snapshot directory and in a parent of the root subvolume.
echo used >$T/@root/file
mv $T/@snapshots $T/@snapshots.real
ln -s @precious $T/@snapshots
for cmd in reset "snapshots ls" "snapshots gc"; do
  before=$(tree)
  run imperm --config /tmp/gc.toml $cmd $R
  want_rc 2 "$cmd with @snapshots a symlink"
  one_line_err "$cmd with @snapshots a symlink"
  [ "$(tree)" = "$before" ] || fail "$cmd with @snapshots a symlink: the tree changed"
  precious_ok "$cmd with @snapshots a symlink"
done
rm $T/@snapshots
mv $T/@snapshots.real $T/@snapshots
ok "reset, ls and gc refuse a snapshot directory that is a symlink"
mkdir $T/dir && ln -s dir $T/dirlink && mv $T/@root $T/dir/@root
before=$(tree)
run imperm reset --fs bcachefs --device $DEV --root-subvolume dirlink/@root --snapshot-dir @snapshots
want_rc 2 "root behind a symlinked parent"
one_line_err "root behind a symlinked parent"
has /tmp/err "symlink" "root behind a symlinked parent"
[ "$(tree)" = "$before" ] || fail "root behind a symlinked parent: the tree changed"
mv $T/dir/@root $T/@root && rm $T/dirlink && rmdir $T/dir
ok "a root subvolume behind a symlinked parent is refused"

# Names with a newline are refused in one line; non-UTF-8 names work end to end.
run imperm reset --fs bcachefs --device $DEV --root-subvolume "@r$NL" --snapshot-dir @snapshots
want_rc 2 "a root subvolume name with a newline"
one_line_err "a root subvolume name with a newline"
[ -e "$T/@r$NL" ] && fail "a root with a newline in its name was created"
ok "a root subvolume name with a newline is refused in one line"
run imperm reset --fs bcachefs --device $DEV --root-subvolume "@r$(printf '\377')" --snapshot-dir @snapshots
want_rc 2 "a root subvolume name that is not UTF-8"
[ -e "$T/@r$(printf '\377')" ] && fail "a root with a non-UTF-8 name was created"
ok "a root subvolume name that is not UTF-8 is refused (by the argument parser)"

# A read-only snapshot as the root: its snapshot is taken, it is destroyed and made anew.
bchsubvol snapshot -r $T/@precious $T/@ro || fail "make @ro"
IMPERM_NOW=2026-03-01T00:00:00Z
run imperm reset --fs bcachefs --device $DEV --root-subvolume @ro --snapshot-dir @snaps-ro
if [ "$rc" = 0 ]; then
  [ "$(cat $T/@snaps-ro/20260301T000000Z/data)" = keep ] || fail "@ro's snapshot lacks its data"
  [ -z "$(ls -A $T/@ro)" ] || fail "@ro was not replaced"
  touch $T/@ro/w || fail "the new @ro is not writable"
  ok "a read-only snapshot as the root: kept in a snapshot and replaced by a writable root"
else
  one_line_err "a read-only snapshot as the root"
  [ "$(cat $T/@ro/data)" = keep ] || fail "@ro lost its data after a refused reset"
  ok "a read-only snapshot as the root: refused ($(cat /tmp/err)), nothing lost"
fi
precious_ok "read-only root"
# A snapshot directory inside a read-only snapshot: EROFS, named, before anything changed.
bchsubvol snapshot -r $T/@precious $T/@ro2 || fail "make @ro2"
echo used >$T/@root/file2
before=$(tree)
run imperm reset --fs bcachefs --device $DEV --root-subvolume @root --snapshot-dir @ro2/snaps
want_rc 2 "a snapshot directory inside a read-only snapshot"
one_line_err "a snapshot directory inside a read-only snapshot"
has /tmp/err "create subvolume @ro2/snaps on $DEV: read-only" "snapshot directory in @ro2"
has /tmp/err "(EROFS)" "snapshot directory in @ro2"
[ "$(tree)" = "$before" ] || fail "snapshot directory in @ro2: the tree changed"
ok "a snapshot directory inside a read-only snapshot: EROFS named, nothing changed"

# A destroy racing a rename: gc deletes while the victims' names keep being swapped for
# symlinks to @precious and back, and the snapshot directory itself is renamed.
for i in 1 2 3 4 5 6 7 8; do
  bchsubvol snapshot -r $T/@root "$T/@snapshots/2025020${i}T000000Z" || fail "race: snapshot $i"
done
(
  while :; do
    for i in 1 2 3 4; do
      v=$T/@snapshots/2025020${i}T000000Z
      mv "$v" "$v.away" 2>/dev/null && ln -s ../@precious "$v" 2>/dev/null
      rm -f "$v" 2>/dev/null
      mv "$v.away" "$v" 2>/dev/null
    done
    mv $T/@snapshots $T/@snapshots.moved 2>/dev/null && ln -s @precious $T/@snapshots
    rm -f $T/@snapshots
    mv $T/@snapshots.moved $T/@snapshots 2>/dev/null
  done
) &
racer=$!
IMPERM_NOW=2026-01-07T00:00:00Z
for i in 1 2 3 4 5 6; do
  run imperm --config /tmp/gc.toml snapshots gc $R
  case $rc in 0 | 2) ;; *) fail "race: gc exit $rc" ;; esac
  [ "$rc" = 2 ] && one_line_err "race: gc refused"
  precious_ok "race $i"
done
kill $racer
wait $racer 2>/dev/null
for v in $T/@snapshots.moved $T/@snapshots/*.away; do [ -e "$v" ] && echo "  race left $v"; done
# Killed between its two renames, the racer left the directory aside, and a symlink or
# nothing in its place.
if [ -e $T/@snapshots.moved ]; then
  rm -f $T/@snapshots
  mv $T/@snapshots.moved $T/@snapshots
fi
for f in $T/@snapshots/*.away; do [ -e "$f" ] && mv "$f" "${f%.away}"; done
for f in $T/@snapshots/*; do [ -L "$f" ] && [ "$f" != $T/@snapshots/20250101T000000Z ] && rm "$f"; done
run imperm --config /tmp/gc.toml snapshots gc $R
want_rc 0 "gc after the race"
left=$(dated $T/@snapshots)
[ "$left" = "20250101T000000Z 20250102T000000Z 20260105T000000Z 20260106T000000Z" ] ||
  fail "after the race, gc left: $left"
[ "$(count $T/@snapshots)" = 6 ] || fail "after the race: $(count $T/@snapshots) entries"
precious_ok "after the race"
ok "gc racing renames and symlink swaps: every run ended 0 or one line, @precious untouched, the next gc finished the job"

# A file still open in a subvolume nested two deep in the root: that one is destroyed, but
# the one holding it cannot be (ENOTEMPTY, after imperm's sync and retries). The old root is
# in its verified snapshot by then, so the reset sets what is left aside beside the root
# (one line naming the subvolume and the errno) and creates the fresh root: the host boots.
# gc says it still cannot delete the remains while the file is open, and deletes them after.
fill_root "before 0401"
IMPERM_NOW=2026-04-01T00:00:00Z
exec 3<$T/@root/var/lib/machines/inner/file
run imperm reset $R
want_rc 0 "reset with a file open in a nested subvolume"
has /tmp/err "cannot delete the old root @root on $DEV (delete subvolume @root/var/lib/machines on $DEV: it still holds another subvolume" "file in use"
has /tmp/err "(ENOTEMPTY)); its content is in snapshot 20260401T000000Z: set aside as @root.imperm-dead-20260401T000000Z on $DEV" "file in use"
[ -z "$(ls -A $T/@root)" ] || fail "file in use: the new root is not empty"
[ "$(cat $T/@snapshots/20260401T000000Z/etc/day)" = "before 0401" ] || fail "file in use: the snapshot"
[ -d $T/@root.imperm-dead-20260401T000000Z/var/lib/machines ] || fail "file in use: the remains"
printf '[retention]\nkeep_last = 20\n' >/tmp/gc-all.toml
run imperm --config /tmp/gc-all.toml snapshots gc $R
want_rc 0 "gc with the file still open"
has /tmp/err "still cannot delete @root.imperm-dead-20260401T000000Z on $DEV, an old root a reset set aside" "gc, file open"
[ -d $T/@root.imperm-dead-20260401T000000Z ] || fail "gc, file open: the remains went"
exec 3<&-
run imperm --config /tmp/gc-all.toml snapshots gc $R
want_rc 0 "gc after the file was closed"
has /tmp/err "deleted @root.imperm-dead-20260401T000000Z on $DEV, an old root a reset set aside" "gc, file closed"
[ -e $T/@root.imperm-dead-20260401T000000Z ] && fail "gc, file closed: the remains are still there"
[ "$(cat $T/@snapshots/20260401T000000Z/etc/day)" = "before 0401" ] || fail "gc: the snapshot"
precious_ok "file in use"
ok "a file open in a nested subvolume: the reset sets the old root aside (ENOTEMPTY) and creates the root; gc deletes the remains once it can"

# A writer in a nested subvolume while the reset runs (each write opened, written, closed,
# until the subvolume is gone): whatever it left dirty keeps the subvolume holding it
# ENOTEMPTY for a moment after it is destroyed; imperm's sync and retries see it through.
fill_root "before 0402"
(while dd if=/dev/zero of=$T/@root/var/lib/machines/inner/w bs=1M count=8 2>/dev/null; do :; done) &
writer=$!
sleep 1
IMPERM_NOW=2026-04-02T00:00:00Z
run imperm reset $R
wait $writer
want_rc 0 "reset with a writer in a nested subvolume"
[ -z "$(ls -A $T/@root)" ] || fail "writer: the new root is not empty"
[ "$(cat $T/@snapshots/20260402T000000Z/etc/day)" = "before 0402" ] || fail "writer: the snapshot"
precious_ok "writer"
ok "a writer in a nested subvolume during the reset: the reset completes"

umount $T || fail "umount"
echo "PASS bcachefs-ioctls"
