{
  description = "imperm: make NixOS impermanence safe to roll out and easy to live with";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    impermanence.url = "github:nix-community/impermanence";
  };

  outputs =
    {
      self,
      nixpkgs,
      impermanence,
    }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: rec {
        imperm = pkgs.callPackage ./nix/package.nix { };
        default = imperm;
      });

      # imperm's module together with the impermanence module it configures.
      nixosModules.default =
        { lib, pkgs, ... }:
        {
          imports = [
            impermanence.nixosModules.impermanence
            ./nix/module.nix
          ];
          services.imperm.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };

      lib = import ./nix/lib.nix;
    };
}
