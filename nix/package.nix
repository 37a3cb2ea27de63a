# imperm, built from this repository with the locked dependencies.
{
  lib,
  rustPlatform,
  installShellFiles,
}:
rustPlatform.buildRustPackage {
  pname = "imperm";
  version = (builtins.fromTOML (builtins.readFile ../Cargo.toml)).package.version;
  # Not cargo's target/ (hundreds of MB after a local build), which a non-flake
  # callPackage would copy into the store. (bench/ stays: Cargo.toml names an example there.)
  src = lib.cleanSourceWith {
    src = lib.cleanSource ../.;
    filter = path: type: !(type == "directory" && baseNameOf path == "target");
  };
  cargoLock.lockFile = ../Cargo.lock;
  nativeBuildInputs = [ installShellFiles ];
  # The test suite makes loop devices and mounts btrfs as root: not in the build sandbox.
  doCheck = false;
  postInstall = ''
    installShellCompletion --cmd imperm \
      --bash <($out/bin/imperm completions bash) \
      --zsh <($out/bin/imperm completions zsh) \
      --fish <($out/bin/imperm completions fish)
    $out/bin/imperm man --dir man
    installManPage man/*.1
  '';
  meta = {
    description = "Make NixOS impermanence safe to roll out and easy to live with";
    license = with lib.licenses; [ mit asl20 ];
    platforms = lib.platforms.linux;
    mainProgram = "imperm";
  };
}
