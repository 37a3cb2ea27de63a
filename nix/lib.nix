# Pure functions of the imperm module, written with builtins only so that they evaluate
# without nixpkgs (`nix-instantiate --eval --strict`), which is how the tests check them.
let
  inherit (builtins)
    attrNames
    concatStringsSep
    filter
    hasAttr
    isAttrs
    isBool
    isInt
    isList
    isString
    listToAttrs
    map
    toJSON
    ;

  # A TOML basic string: JSON's escapes (\" \\ \n \uXXXX) are TOML's too.
  str = toJSON;

  # A bare TOML key when it can be one, else a quoted one.
  key = k: if builtins.match "[A-Za-z0-9_-]+" k != null then k else str k;

  value =
    v:
    if isString v then
      str v
    else if isBool v then
      (if v then "true" else "false")
    else if isInt v then
      toString v
    else if isList v then
      "[" + concatStringsSep ", " (map value v) + "]"
    else if isAttrs v then
      "{ " + concatStringsSep ", " (map (k: "${key k} = ${value v.${k}}") (attrNames v)) + " }"
    else
      throw "imperm: cannot write ${builtins.typeOf v} to TOML";

  # The attributes of an impermanence entry that imperm's configuration takes.
  entryKeys = [ "directory" "file" "user" "group" "mode" "parentDirectory" "persistentStoragePath" ];
  entry =
    e:
    if isString e then
      e
    else
      listToAttrs (
        map (k: { name = k; value = e.${k}; }) (filter (k: hasAttr k e && e.${k} != null) entryKeys)
      );

  line = k: v: "${key k} = ${value v}";
  section = header: lines: concatStringsSep "\n" ([ header ] ++ lines) + "\n";
  optional = cond: xs: if cond then xs else [ ];
  optionalAttrs = cond: a: if cond then a else { };
in
rec {
  # The seed's "Minimal Server Persistence": data/server-template.toml, the same set.
  serverTemplate = {
    directories = [
      "/var/lib/nixos"
      "/var/lib/systemd/coredump"
      "/var/log"
      "/var/lib/tailscale"
      "/etc/NetworkManager/system-connections"
      "/var/lib/acme"
    ];
    files = [
      "/etc/machine-id"
      "/etc/ssh/ssh_host_ed25519_key"
      "/etc/ssh/ssh_host_ed25519_key.pub"
      "/etc/ssh/ssh_host_rsa_key"
      "/etc/ssh/ssh_host_rsa_key.pub"
    ];
  };

  # /etc/imperm/config.toml from the module's settings.
  configToml =
    {
      filesystem ? null, # { type, device ? null, rootSubvolume, snapshotDir, blankSnapshot ? null }
      storage ? "/persist",
      directories ? [ ],
      files ? [ ],
      users ? { }, # name -> { directories ? [ ]; files ? [ ]; home ? null; }
      # Every storage at once (storage -> { directories; files; users; }), as
      # `fromPersistence` gives them; when set, the four above are not used.
      storages ? null,
      retention ? null, # { keepLast ? 0; …; timezone ? null; }
      checkIgnore ? [ ],
      checkRules ? [ ], # [ { path; verdict; reason; } ]
      earlyReads ? [ ], # [ { path; reader; fix ? null; } ]
      # The storages on a filesystem the initrd mounts, as `neededForBootStorages` finds
      # them; null for a file that does not say (not written from a NixOS configuration).
      neededForBoot ? null,
    }:
    let
      fs = optional (filesystem != null) [
        (section "[filesystem]" (
          [ (line "type" filesystem.type) ]
          ++ optional ((filesystem.device or null) != null) [ (line "device" filesystem.device) ]
          ++ [
            (line "root_subvolume" filesystem.rootSubvolume)
            (line "snapshot_dir" filesystem.snapshotDir)
          ]
          ++ optional ((filesystem.blankSnapshot or null) != null) [
            (line "blank_snapshot" filesystem.blankSnapshot)
          ]
        ))
      ];
      all =
        if storages == null then
          { ${storage} = { inherit directories files users; }; }
        # Nothing persisted at all is still said: with no [persistence], imperm would take
        # the live mounts or its template for the persisted set.
        else if storages == { } then
          { ${storage} = { }; }
        else
          storages;
      storageSections =
        name:
        let
          st = all.${name};
          stUsers = st.users or { };
        in
        [
          (section "[persistence.${key name}]" (
            optional ((st.enable or true) == false) [ (line "enable" false) ]
            ++ optional ((st.persistentStoragePath or null) != null) [ (line "persistentStoragePath" st.persistentStoragePath) ]
            ++ [
            (line "hideMounts" true)
            (line "directories" (map entry (st.directories or [ ])))
            (line "files" (map entry (st.files or [ ])))
          ]))
        ]
        ++ map (
          user:
          let
            u = stUsers.${user};
          in
          section "[persistence.${key name}.users.${key user}]" (
            optional ((u.home or null) != null) [ (line "home" u.home) ]
            ++ [
              (line "directories" (map entry (u.directories or [ ])))
              (line "files" (map entry (u.files or [ ])))
            ]
          )
        ) (attrNames stUsers);
      persistence = builtins.concatMap storageSections (attrNames all);
      userSections = [ ];
      keep = name: optional ((retention.${name} or 0) != 0) [ (line name retention.${name}) ];
      ret = optional (retention != null) [
        (section "[retention]" (
          keep "keep_last"
          ++ keep "keep_daily"
          ++ keep "keep_weekly"
          ++ keep "keep_monthly"
          ++ keep "keep_yearly"
          ++ optional ((retention.timezone or null) != null) [ (line "timezone" retention.timezone) ]
        ))
      ];
      check = [ (section "[check]" [ (line "ignore" checkIgnore) ]) ];
      ruleKeys = [ "path" "verdict" "reason" ];
      rules = map (
        r:
        let
          at = "services.imperm.check.rules: the rule for ${r.path or "(no path)"}";
          unknown = filter (k: !(builtins.elem k ruleKeys)) (attrNames r);
        in
        if unknown != [ ] then
          throw "${at} has ${concatStringsSep ", " unknown}, which imperm does not read (it reads path, verdict, reason)"
        else if !(r ? path) || !(r ? verdict) then
          throw "${at} needs both path and verdict (persist, review, ephemeral or generated)"
        else
          section "[[check.rule]]" [
            (line "path" r.path)
            (line "verdict" r.verdict)
            (line "reason" (r.reason or "set in the NixOS configuration"))
          ]
      ) checkRules;
      early = map (
        r:
        section "[[early_read]]" (
          [
            (line "path" r.path)
            (line "reader" r.reader)
          ]
          ++ optional ((r.fix or null) != null) [ (line "fix" r.fix) ]
        )
      ) earlyReads;
      # What the evaluation knows and a running host's mount table does not: `imperm
      # status` reads it.
      module = optional (neededForBoot != null) [
        (section "[module]" [ (line "needed_for_boot" neededForBoot) ])
      ];
    in
    concatStringsSep "\n" (
      [ "# Written by the imperm NixOS module; edit the module's options instead.\n" ]
      ++ fs
      ++ persistence
      ++ userSections
      ++ ret
      ++ check
      ++ rules
      ++ early
      ++ module
    );

  # The persisted set of a host: the template (unless "none") and its own additions.
  # `host` is services.imperm's settings; missing ones take the options' defaults.
  # A template entry the host already persists (the same path, or one below a directory
  # of its own) is left out, as is one at or below `host.separateMounts` (mount points of
  # filesystems of their own, which no reset wipes: a `/var/log` subvolume, say): the host
  # can take the template as it stands whatever it persists already.
  hostPersistence =
    host:
    let
      template = if (host.template or "server") == "server" then serverTemplate else { directories = [ ]; files = [ ]; };
      pathOf = key: e: let n = normalPath (if isString e then e else e.${key} or ""); in if n == null then "" else n;
      own = map (pathOf "directory") (host.directories or [ ]);
      ownFiles = map (pathOf "file") (host.files or [ ]);
      separate = map (m: let n = normalPath m; in if n == null then m else n) (host.separateMounts or [ ]);
      keep = p: !(builtins.elem p ownFiles) && !(builtins.any (d: isAtOrBelow d p) (own ++ separate));
    in
    {
      directories = filter (d: keep (pathOf "directory" d)) template.directories ++ (host.directories or [ ]);
      files = filter (f: keep (pathOf "file" f)) template.files ++ (host.files or [ ]);
      users = host.users or { };
    };

  # Template paths the final persistence declares more than once (the template and some
  # other definition), as messages: impermanence refuses duplicates without a word of where
  # the second comes from.
  templateDuplicates =
    persisted:
    let
      template = serverTemplate.directories ++ serverTemplate.files;
      count = p: builtins.length (filter (q: q.path == p) persisted);
    in
    map (p: "${str p} is in imperm's server template and declared again in environment.persistence: take your declaration out (the template keeps it), move it into services.imperm.directories or files (the template then leaves it out), or set services.imperm.template = \"none\"") (
      filter (p: count p > 1) template
    );

  # The device paths behind a `fileSystems.<n>.device` spelling, as udev names them, or
  # null for one imperm cannot wait for: `/dev/…` as it is, `UUID=`, `LABEL=`, `PARTUUID=`,
  # `PARTLABEL=` as their /dev/disk/by-* links, and for bcachefs a `:`-separated list of
  # members (each of which must appear). Only names made of the characters udev and
  # systemd leave as they are (letters, digits, `#+-.:=@_`): for any other (a space, a
  # `/` in a label, non-ASCII) udev writes `\xNN` into the link's name, which a spelling
  # here cannot match; such a device is better named by UUID.
  devicePaths =
    fsType: device:
    let
      safe = "[A-Za-z0-9#+.:=@_-]+";
      prefixed = builtins.match "(UUID|LABEL|PARTUUID|PARTLABEL)=(${safe})" device;
      byKind = {
        UUID = "by-uuid";
        LABEL = "by-label";
        PARTUUID = "by-partuuid";
        PARTLABEL = "by-partlabel";
      };
      # A /dev path with no empty, `.` or `..` component, that does not end in `/`.
      devPath = p: builtins.match "/dev(/${safe})+" p != null && builtins.match ".*/\\.{1,2}(/.*)?" p == null;
      members = builtins.filter (m: builtins.isString m && m != "") (builtins.split ":(/dev/)" device);
      list = builtins.match "(/dev/[^:]+)(:/dev/[^:]+)+" device != null;
      memberPaths = map (m: if builtins.substring 0 5 m == "/dev/" then m else "/dev/" + m) members;
    in
    if prefixed != null then
      [ "/dev/disk/${byKind.${builtins.elemAt prefixed 0}}/${builtins.elemAt prefixed 1}" ]
    else if list then
      (if fsType == "bcachefs" && builtins.all devPath memberPaths then memberPaths else null)
    else if devPath device then
      [ device ]
    else
      null;

  # `p` with `//`, `/./` and a trailing `/` taken out, or null when it is not absolute,
  # has a `..` component or a control character: what imperm's configuration refuses.
  normalPath =
    p:
    let
      parts = filter (c: builtins.isString c && c != "" && c != ".") (builtins.split "/" p);
    in
    if !(isString p) || builtins.substring 0 1 p != "/" || builtins.elem ".." parts || builtins.match "[^[:cntrl:]]*" p == null then
      null
    else
      "/" + concatStringsSep "/" parts;

  # The device the reset mounts, for the module's `filesystem` settings: the one path
  # `devicePaths` gives, else the spelling as it is (a bcachefs member list, or one imperm
  # cannot wait for, which the module's assertions refuse).
  resetDevice =
    fs:
    let
      paths = if (fs.device or null) == null then null else devicePaths fs.type fs.device;
    in
    if paths == null || builtins.length paths > 1 then fs.device or null else builtins.head paths;

  # One word of an ExecStart line as systemd.service(5) reads it, which is not a shell: it
  # C-unescapes inside double quotes (JSON's escapes are among its own), expands `%`
  # specifiers and `$VAR`s, so `%` and `$` are doubled; NixOS's utils.escapeSystemdExecArg,
  # with builtins only.
  systemdArg = arg: builtins.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (toJSON (toString arg));

  # The reset's arguments for the module's `filesystem` settings. Values go after `=`, so
  # that one starting with `-` is never taken for an option.
  resetArgv =
    fs:
    [
      "reset"
      "--fs=${fs.type}"
      "--device=${toString (resetDevice fs)}"
      "--root-subvolume=${fs.rootSubvolume or "@root"}"
      "--snapshot-dir=${fs.snapshotDir or "@snapshots"}"
    ]
    ++ optional ((fs.blankSnapshot or null) != null) [ "--blank-snapshot=${fs.blankSnapshot}" ];

  # The reset unit's ExecStart for the module's `filesystem` settings and the package's
  # path: the one place the module's command line is written, so that tests/vm boots
  # exactly these arguments (it evaluates `resetArgv`) and tests/module.rs checks the unit
  # holds this line.
  resetCommand = package: fs: concatStringsSep " " (map systemdArg ([ "${package}/bin/imperm" ] ++ resetArgv fs));

  # Every storage of the final `environment.persistence` (what impermanence mounts, from
  # services.imperm and from anywhere else in the configuration) as `configToml`'s
  # `storages`: entries as imperm's configuration spells them, with the owner and mode
  # only where they differ from what impermanence makes by default, and a user's home
  # only where it is not imperm's default. `accounts` is users.users (home and group).
  fromPersistence =
    persistence: accounts:
    let
      differs = defaults: e: builtins.filter (k: (e.${k} or null) != null && e.${k} != defaults.${k}) (attrNames defaults);
      # An entry may name its own storage (impermanence's per-entry persistentStoragePath):
      # kept where it differs from the storage it is listed under.
      elsewhere = storage: e: if (e.persistentStoragePath or storage) != storage then [ { name = "persistentStoragePath"; value = e.persistentStoragePath; } ] else [ ];
      owned =
        storage: defaults: pathKey: e:
        let
          keys = differs defaults e;
          own = elsewhere storage e;
        in
        if keys == [ ] && own == [ ] then e.${pathKey} else listToAttrs ([ { name = pathKey; value = e.${pathKey}; } ] ++ map (k: { name = k; value = e.${k}; }) keys ++ own);
      file =
        storage: defaults: f:
        let
          parent = f.parentDirectory or { };
          keys = differs defaults parent;
          own = elsewhere storage f;
        in
        if keys == [ ] && own == [ ] then f.file
        else listToAttrs ([ { name = "file"; value = f.file; } ] ++ own ++ optional (keys != [ ]) [ { name = "parentDirectory"; value = listToAttrs (map (k: { name = k; value = parent.${k}; }) keys); } ]);
      system = { user = "root"; group = "root"; mode = "0755"; };
      defaultHome = name: if name == "root" then "/root" else "/home/${name}";
    in
    builtins.mapAttrs (
      storage: p:
      # A storage with `enable = false` is not mounted by impermanence: what it lists is
      # wiped like anything else, so none of it is persisted; it is written as disabled,
      # so that config.toml still states the persisted set (with no [persistence] at all,
      # imperm would take the live mounts or its template for it).
      if !(p.enable or true) then
        { enable = false; directories = [ ]; files = [ ]; users = { }; }
      else
      # Named by its attribute, which impermanence only uses as the default path.
      optionalAttrs ((p.persistentStoragePath or storage) != storage) { inherit (p) persistentStoragePath; }
      // {
      directories = map (owned storage system "directory") (p.directories or [ ]);
      files = map (file storage system) (p.files or [ ]);
      users = builtins.mapAttrs (
        name: u:
        let
          own = { user = name; group = accounts.${name}.group or "users"; mode = "0755"; };
          home = accounts.${name}.home or null;
        in
        {
          directories = map (owned storage own "directory") (u.directories or [ ]);
          files = map (file storage own) (u.files or [ ]);
        }
        // (if home != null && home != defaultHome name then { inherit home; } else { })
      ) (p.users or { });
    }) persistence;

  # Every persisted path of `fromPersistence`'s storages, absolute (a user's entries joined
  # to the home directory, from `accounts`, users.users), as { path; storage; directory; }.
  persistedPaths =
    storages: accounts:
    let
      # Compared with other paths, so in normal form where it has one (imperm's loader
      # refuses the others, and the module's assertions name them).
      normal = p: let n = normalPath p; in if n == null then p else n;
      one =
        storage: prefix: key: directory: e:
        {
          path = normal (prefix + (if isString e then e else e.${key}));
          storage = normal (if isString e then storage else e.persistentStoragePath or storage);
          inherit directory;
          # preservation mounts it in the initrd: in place before anything in stage 2 reads.
          initrd = !(isString e) && (e.inInitrd or false);
        };
      defaultHome = user: if user == "root" then "/root" else "/home/${user}";
      of = storage: prefix: st: map (one storage prefix "directory" true) (st.directories or [ ]) ++ map (one storage prefix "file" false) (st.files or [ ]);
    in
    builtins.concatMap (
      { st, storage, users, ... }:
      of storage "" st
      ++ builtins.concatMap (
        user:
        let
          home = users.${user}.home or accounts.${user}.home or (defaultHome user);
        in
        of storage (if home == "/" then "/" else home + "/") users.${user}
      ) (attrNames users)
    ) (enabledStorages storages);

  # The enabled storages of `fromPersistence`'s set, each with its path and users.
  enabledStorages =
    storages:
    map (name: {
      inherit name;
      st = storages.${name};
      storage = storages.${name}.persistentStoragePath or name;
      users = storages.${name}.users or { };
    }) (filter (name: storages.${name}.enable or true) (attrNames storages));

  # The filesystem of `filesystems` (fileSystems' values) whose mount point is the deepest
  # at or above `path` (normal form), or null.
  deepestMount =
    filesystems: path:
    builtins.foldl' (
      best: fs:
      let
        m = normalPath fs.mountPoint;
      in
      if m != null && isAtOrBelow m path && (best == null || builtins.stringLength m > builtins.stringLength (normalPath best.mountPoint)) then fs else best
    ) null filesystems;

  # Whether `path` is `dir` or below it.
  isAtOrBelow = dir: path: path == dir || (dir == "/" && path != "/") || builtins.substring 0 (builtins.stringLength dir + 1) path == dir + "/";

  # Persisted paths on a filesystem of their own (a fileSystems mount point other than
  # "/", a storage or a bind mount): the reset never wipes them, so persisting them keeps
  # nothing, and impermanence then needs that filesystem in the initrd (neededForBoot).
  # `filesystems` is fileSystems' values. Gives { path; mountPoint; neededForBoot; message; }.
  offRootPaths =
    persisted: filesystems:
    let
      storages = map (p: p.storage) persisted;
      separate = filter (
        fs:
        fs.mountPoint != "/"
        # A tmpfs is wiped at every boot like the root: persisting from it is right.
        && !(builtins.elem (fs.fsType or "") [ "tmpfs" "ramfs" ])
        && !(builtins.any (st: isAtOrBelow st fs.mountPoint) storages)
        && !(builtins.elem "bind" (fs.options or [ ]))
      ) filesystems;
      deepest = p: deepestMount separate p.path;
    in
    builtins.concatMap (
      p:
      let
        fs = deepest p;
      in
      optional (fs != null) [
        {
          inherit (p) path;
          inherit (fs) mountPoint;
          neededForBoot = fs.neededForBoot or false;
          message = "${str p.path} is persisted in ${p.storage} but lives on ${fs.mountPoint}, a filesystem of its own: the reset never wipes it, so persisting it keeps nothing, and impermanence would need fileSystems.${str fs.mountPoint}.neededForBoot. Leave it out; a key file that the initrd reads (boot.initrd.secrets, crypttab) can live in ${p.storage} instead, with its reader pointed there.";
        }
      ]
    ) persisted;

  # NixOS's `utils.pathsNeededForBoot`: mount points NixOS mounts in the initrd whether or
  # not they say neededForBoot.
  pathsNeededForBoot = [ "/" "/nix" "/nix/store" "/var" "/var/log" "/var/lib" "/var/lib/nixos" "/etc" "/usr" ];

  # Why the persistent storages cannot hold state across a reset, as messages: each must
  # be on a filesystem of its own (a fileSystems mount point at or above it, other than
  # "/"), mounted in the initrd. `storages` are paths, `filesystems` fileSystems' values.
  #
  # A storage bind-mounted from another path is judged by that path; one on a subvolume
  # of the root's own filesystem inside the root subvolume (`subvol=@root/persist`) is
  # replaced by every reset. `rootSubvolume` is services.imperm's, or null for a tmpfs.
  storageProblems =
    {
      storages,
      filesystems,
      rootSubvolume ? null,
    }:
    let
      opts = fs: builtins.concatMap (o: filter isString (builtins.split "," o)) (fs.options or [ ]);
      subvolOf = fs: let m = builtins.concatMap (o: let x = builtins.match "(subvol|X-mount.subdir)=/*(.*[^/])/*" o; in optional (x != null) [ (builtins.elemAt x 1) ]) (opts fs); in if m == [ ] then null else builtins.head m;
      root = builtins.foldl' (found: fs: if fs.mountPoint == "/" then fs else found) null filesystems;
      needed = fs: (fs.neededForBoot or false) || builtins.elem (normalPath fs.mountPoint) pathsNeededForBoot;
      holder = deepestMount (filter (fs: fs.mountPoint != "/") filesystems);
      # Why `st` (normal) does not survive a reset, following binds a few levels deep.
      problem =
        raw: st: depth:
        let
          fs = holder st;
          src = if fs == null then null else normalPath (fs.device or "");
        in
        if fs == null then
          "the persistent storage ${str raw} lies on the root filesystem, which the reset wipes: give it a filesystem of its own (fileSystems.${str st} with neededForBoot = true, or a subvolume mounted there)"
        else if !(needed fs) then
          "fileSystems.${str fs.mountPoint}.neededForBoot must be true: the persistent storage ${str raw} is on it, and the bind mounts from it happen early"
        else if builtins.elem "bind" (opts fs) && src != null && depth < 8 then
          problem raw (src + builtins.substring (builtins.stringLength (normalPath fs.mountPoint)) (-1) st) (depth + 1)
        else if rootSubvolume != null && root != null && (fs.device or null) == (root.device or null) && subvolOf fs != null
          && isAtOrBelow (let m = builtins.match "/*(.*[^/])/*" rootSubvolume; in if m == null then rootSubvolume else builtins.head m) (subvolOf fs) then
          "the persistent storage ${str raw} is the subvolume ${str (subvolOf fs)}, inside the root subvolume, which every reset replaces: give it a subvolume beside the root (subvol=@persist)"
        else
          null;
    in
    builtins.concatMap (
      raw:
      let
        st = normalPath raw;
        p = if st == null || st == "/" then null else problem raw st 0;
      in
      if st == null || st == "/" then
        [ "the persistent storage ${str raw} is not an absolute path below / (no `..`, no control characters)" ]
      else
        optional (p != null) [ p ]
    ) storages;

  # The storages (paths) that `storageProblems` finds nothing wrong with: each on a
  # filesystem of its own that the initrd mounts (neededForBoot, or a path NixOS mounts
  # there anyway) and that no reset replaces. config.toml's [module] needed_for_boot.
  neededForBootStorages =
    {
      storages,
      filesystems,
      rootSubvolume ? null,
    }:
    filter (st: storageProblems { storages = [ st ]; inherit filesystems rootSubvolume; } == [ ]) storages;

  # Why `fileSystems."/"` (`root`, or null) is not the root that `fs` (services.imperm's
  # filesystem) resets: a reset of another subvolume or filesystem would leave the real
  # root as it is, and keep nothing of what imperm thinks it keeps. As messages.
  rootProblems =
    fs: root:
    let
      # One option may hold several, comma-separated (`"subvol=@root,compress=zstd"`).
      opts = if root == null then [ ] else builtins.concatMap (o: filter isString (builtins.split "," o)) (root.options or [ ]);
      value = prefix: builtins.concatMap (o: let m = builtins.match "${prefix}=(.*)" o; in optional (m != null) [ (builtins.head m) ]) opts;
      strip = v: let m = builtins.match "/*(.*[^/])/*" v; in if m == null then v else builtins.head m;
      subvol = if fs.type == "btrfs" then value "subvol" else value "X-mount.subdir";
      key = if fs.type == "btrfs" then "subvol" else "X-mount.subdir";
      want = strip (fs.rootSubvolume or "@root");
    in
    if fs.type == "tmpfs" then
      optional (root == null || root.fsType != "tmpfs") [
        "services.imperm.filesystem.type is \"tmpfs\" but fileSystems.\"/\" is ${if root == null then "not declared" else "of type ${str root.fsType}"}: set services.imperm.tmpfsRoot.enable, and take the host's own fileSystems.\"/\" out (hardware-configuration.nix)"
      ]
    else if root == null then
      [ "fileSystems.\"/\" is not declared: the reset replaces the ${fs.type} subvolume ${str want} that it must mount" ]
    else if root.fsType != fs.type then
      [ "services.imperm.filesystem.type is ${str fs.type} but fileSystems.\"/\" is of type ${str root.fsType}: the reset would not reset the root" ]
    else if map strip subvol != [ want ] then
      [ "fileSystems.\"/\" must mount the subvolume the reset replaces, with the option \"${key}=${want}\" (it has ${if subvol == [ ] then "none" else str (concatStringsSep ", " subvol)}): otherwise the root is never reset" ]
    else
      [ ];

  # Why the subvolume settings cannot work together, as imperm's configuration refuses
  # them (src/config/mod.rs, check_layout), or null.
  layoutProblem =
    fs:
    let
      strip = v: let m = builtins.match "/*(.*[^/])/*" v; in if m == null then "" else builtins.head m;
      plain = v: v != "" && builtins.match "[^[:cntrl:]]*" v != null && !(builtins.any (c: c == "" || c == "." || c == "..") (filter isString (builtins.split "/" v)));
      root = strip (fs.rootSubvolume or "@root");
      snaps = strip (fs.snapshotDir or "@snapshots");
      blank = if (fs.blankSnapshot or null) == null then null else strip fs.blankSnapshot;
      inside = a: b: builtins.substring 0 (builtins.stringLength b + 1) a == b + "/";
      opt = "services.imperm.filesystem";
    in
    if !(plain root) then "${opt}.rootSubvolume ${str root} is not a plain path below the top level (no empty, `.` or `..` component)"
    else if !(plain snaps) then "${opt}.snapshotDir ${str snaps} is not a plain path below the top level (no empty, `.` or `..` component)"
    else if blank != null && !(plain blank) then "${opt}.blankSnapshot ${str blank} is not a plain path below the top level (no empty, `.` or `..` component)"
    else if snaps == root then "${opt}.snapshotDir is the root subvolume itself"
    else if inside snaps root then "${opt}.snapshotDir ${str snaps} is inside the root subvolume ${str root}, which every reset replaces"
    else if inside root snaps then "${opt}.rootSubvolume ${str root} is inside the snapshot directory ${str snaps}, where gc would take it for an old root"
    else if blank != null && (blank == root || inside blank root || inside root blank) then "${opt}.blankSnapshot ${str blank} is the root subvolume, inside it, or holds it"
    else null;

  # Persisted entries imperm's configuration would refuse (so that `baseline`, `gc`,
  # `check` and `status` would exit 2 on the host), as messages naming the entry.
  # `storages` as `fromPersistence` gives them, `accounts` users.users.
  entryProblems =
    storages: accounts:
    let
      pathOf = key: e: if isString e then e else e.${key} or "";
      clean = p: builtins.match "[^[:cntrl:]]*" p != null;
      relative = p: p != "" && builtins.substring 0 1 p != "/" && clean p && !(builtins.elem ".." (filter isString (builtins.split "/" p)));
      system =
        storage: key: e:
        let
          p = pathOf key e;
          n = normalPath p;
        in
        if n == null then [ "environment.persistence.${str storage}: ${str p} is not an absolute path (without `..` or control characters)" ]
        else if n == "/" then [ "environment.persistence.${str storage}: ${str p} is the root directory itself" ]
        else if isAtOrBelow (normalPath storage) n then [ "environment.persistence.${str storage}: ${str p} lies inside its own persistent storage" ]
        else [ ];
      user =
        storage: name: key: e:
        let
          p = pathOf key e;
        in
        optional (!(relative p)) [ "environment.persistence.${str storage}.users.${name}: ${str p} must be relative to the home directory (no `..`, no control characters)" ];
    in
    builtins.concatMap (
      { st, storage, users, ... }:
      builtins.concatMap (system storage "directory") (st.directories or [ ])
      ++ builtins.concatMap (system storage "file") (st.files or [ ])
      ++ builtins.concatMap (
        u:
        let
          home = users.${u}.home or accounts.${u}.home or null;
        in
        optional (!(accounts ? ${u})) [ "environment.persistence.${str storage}.users.${u}: there is no users.users.${u} (impermanence takes the home and group from it)" ]
        ++ optional (home != null && (normalPath home == null || normalPath home == "/")) [ "users.users.${u}.home ${str home} cannot hold persisted entries: it must be an absolute path below /" ]
        ++ builtins.concatMap (user storage u "directory") (users.${u}.directories or [ ])
        ++ builtins.concatMap (user storage u "file") (users.${u}.files or [ ])
      ) (attrNames users)
    ) (enabledStorages storages);

  # Persisted paths that something reads before stage 2's bind mounts exist (`reads`:
  # [ { path; reader; fix ? null; } ]), each as the warning to give. imperm's `lint` says
  # the same from config.toml's [[early_read]] (src/discover/lint.rs, early_boot_message).
  earlyBootProblems =
    persisted: reads:
    builtins.concatMap (
      r:
      let
        # Spelled as the persisted paths are (normal form), and a Nix path as its string.
        read = let n = normalPath (toString r.path); in if n == null then toString r.path else n;
        covering = filter (
          p: (p.path == read || (p.directory && isAtOrBelow p.path read)) && (!(p.initrd or false) || (r.evenInInitrd or false))
        ) persisted;
        p = builtins.head covering;
        kept = p.storage + read;
        fix = if (r.fix or null) != null then r.fix else "point it at ${kept} (the storage is mounted in the initrd), or keep the file with preservation's inInitrd = true";
      in
      optional (covering != [ ]) [ "${str read} is read by ${r.reader} before the bind mounts from ${p.storage} exist: ${fix}" ]
    ) reads;

  # preservation's `preserveAt` (nix-community/preservation, after its own option
  # processing: users' entries are already joined to their homes) as `fromPersistence`
  # gives storages: every entry a system entry, with the owner and mode where they differ
  # from root's 0755. What it mounts is persisted just as impermanence's mounts are.
  fromPreservation =
    preserveAt:
    builtins.mapAttrs (
      name: p:
      let
        users = builtins.attrValues (p.users or { });
        # preservation adds a user entry's parents as `_intermediate`: only made, never
        # mounted, so never persisted.
        mounted = filter (e: isString e || (e.how or "bindmount") != "_intermediate");
        dirs = mounted ((p.directories or [ ]) ++ builtins.concatMap (u: u.directories or [ ]) users);
        files = mounted ((p.files or [ ]) ++ builtins.concatMap (u: u.files or [ ]) users);
        system = { user = "root"; group = "root"; mode = "0755"; };
        dir =
          d:
          let
            keys = builtins.filter (k: (d.${k} or null) != null && d.${k} != system.${k}) (attrNames system);
          in
          if isString d then d
          else if keys == [ ] && !(d.inInitrd or false) then d.directory
          else listToAttrs ([ { name = "directory"; value = d.directory; } ] ++ map (k: { name = k; value = d.${k}; }) keys ++ initrd d);
        # Kept for the early-boot comparison; config.toml does not take it.
        initrd = e: optional (e.inInitrd or false) [ { name = "inInitrd"; value = true; } ];
        storage = p.persistentStoragePath or name;
      in
      optionalAttrs (storage != name) { persistentStoragePath = storage; }
      // {
        directories = map dir dirs;
        files = map (f: if isString f then f else if f.inInitrd or false then { inherit (f) file; inInitrd = true; } else f.file) files;
        users = { };
      }
    ) preserveAt;

  # What impermanence's home-manager module declares (home-manager.users.<n>.home.persistence,
  # whose entries carry their absolute dirPath/filePath and their storage), which
  # impermanence's NixOS module mounts with the rest, as `fromPersistence` gives storages:
  # system entries under their full path, with the owner and mode where they differ from
  # root's 0755.
  fromHomeManager =
    hmUsers:
    let
      system = { user = "root"; group = "root"; mode = "0755"; };
      storagesOf = u: filter (p: p.enable or true) (builtins.attrValues (u.home.persistence or { }));
      all = builtins.concatMap storagesOf (builtins.attrValues hmUsers);
      dir =
        d:
        let
          keys = builtins.filter (k: (d.${k} or null) != null && d.${k} != system.${k}) (attrNames system);
        in
        if keys == [ ] then d.dirPath else listToAttrs ([ { name = "directory"; value = d.dirPath; } ] ++ map (k: { name = k; value = d.${k}; }) keys);
      entries = builtins.concatMap (p: map (d: { storage = d.persistentStoragePath or p.persistentStoragePath; dir = dir d; }) (p.directories or [ ])
        ++ map (f: { storage = f.persistentStoragePath or p.persistentStoragePath; file = f.filePath; }) (p.files or [ ])) all;
      names = builtins.foldl' (acc: e: if builtins.elem e.storage acc then acc else acc ++ [ e.storage ]) [ ] entries;
    in
    listToAttrs (
      map (st: {
        name = st;
        value = {
          directories = map (e: e.dir) (filter (e: e.storage == st && e ? dir) entries);
          files = map (e: e.file) (filter (e: e.storage == st && e ? file) entries);
          users = { };
        };
      }) names
    );

  # Two sets of storages as one: a storage in both gets both lists.
  mergeStorages =
    a: b:
    a
    // builtins.mapAttrs (
      name: st:
      if a ? ${name} then
        a.${name}
        // {
          directories = (a.${name}.directories or [ ]) ++ (st.directories or [ ]);
          files = (a.${name}.files or [ ]) ++ (st.files or [ ]);
        }
      else
        st
    ) b;

  # The reads config.toml gets as [[early_read]]: all but those a persisted entry mounted
  # in the initrd settles (imperm's lint does not know preservation's inInitrd).
  unsettledReads =
    persisted: reads:
    filter (
      r:
      let
        read = let n = normalPath (toString r.path); in if n == null then toString r.path else n;
      in
      !(builtins.any (p: (p.initrd or false) && !(r.evenInInitrd or false) && (p.path == read || (p.directory && isAtOrBelow p.path read))) persisted)
    ) reads;

  # services.imperm.users as impermanence takes them: without `home`, an option it has
  # removed (it deduces the home from users.users.NAME.home, and refuses the key). imperm's
  # own config.toml keeps it.
  impermanenceUsers = builtins.mapAttrs (_: u: builtins.removeAttrs u [ "home" ]);

  # Why a host's retention policy (services.imperm.retention, missing keys at the
  # options' defaults) cannot be used, or null. A policy that keeps nothing is refused by
  # imperm itself (status, gc and baseline would exit 2 on the host), so the module
  # asserts this at evaluation instead.
  retentionProblem =
    ret:
    let
      counts = [
        (ret.keepLast or 5)
        (ret.keepDaily or 0)
        (ret.keepWeekly or 4)
        (ret.keepMonthly or "all")
        (ret.keepYearly or 0)
      ];
    in
    if builtins.any (n: n != 0) counts then
      null
    else
      "services.imperm.retention keeps nothing (every keep* is 0): give at least one count, or \"all\"; imperm refuses a policy that would delete every old root.";

  # /etc/imperm/config.toml for a host's services.imperm settings.
  hostToml =
    host:
    let
      fs = host.filesystem or { };
      ret = host.retention or { };
      persisted = hostPersistence host;
    in
    configToml {
      filesystem = {
        type = fs.type;
        device = fs.device or null;
        rootSubvolume = fs.rootSubvolume or "@root";
        snapshotDir = fs.snapshotDir or "@snapshots";
        blankSnapshot = fs.blankSnapshot or null;
      };
      storage = host.persistentStoragePath or "/persist";
      inherit (persisted) directories files users;
      retention = {
        keep_last = ret.keepLast or 5;
        keep_daily = ret.keepDaily or 0;
        keep_weekly = ret.keepWeekly or 4;
        keep_monthly = ret.keepMonthly or "all";
        keep_yearly = ret.keepYearly or 0;
        timezone = ret.timezone or null;
      };
      storages = host.storages or null;
      checkIgnore = host.check.ignore or [ ];
      checkRules = host.check.rules or [ ];
      earlyReads = host.earlyReads or [ ];
      neededForBoot = host.neededForBoot or null;
    };
}
