// Package testenv builds the local world that tests of several packages share, so that each package
// does not assemble it again:
//
//   - SharePoint's side: a dev CA and an Azurite over HTTPS with a leaf of it (Storage: SharePoint's
//     storage account, whose SAS carry spr=https), and the SPO emulator on it (SharePoint);
//   - the app's side: the app's storage (AppStorage, the package's shared Azurite by default), a job
//     table (JobStore), the vault custody over a Key Vault emulator (Custody), an spo.Client for the
//     emulator (SharePoint.Client), the provision service (App.Provisioner), and all of it for one test
//     (NewApp);
//   - staging as a client does it: a package encrypted, uploaded and snapshotted into provisioned
//     containers (StagePackage), and reading back what the emulator wrote (ReadEncrypted, DrainQueue);
//   - SPORecorder, a transport that learns the secrets SharePoint answers, for scans of what was
//     logged or answered (package capture).
//
// Processes (Azurite) are stopped by PID: those of one test by tb.Cleanup, the package's shared ones by
// RunMain, which the package's TestMain must call when it uses SharedStorage, SharedSharePoint or the
// shared Azurite of the app's storage. Every part takes an Options struct whose zero value works.
//
// Only tests import testenv; product packages never import internal/dev. Because testenv imports
// jobs, vault, spo, provision, storageconn, crypt, migpkg and the dev emulators, the internal tests of
// those packages cannot import it (an import cycle): they use package capture, kvemu.StartTest and
// spoemu.StartTest, or an external test package.
package testenv
