/* SPDX-License-Identifier: Apache-2.0 */
// A program the dynamic loader refuses to start: it needs lu_gone_lib, which
// is on no search path (the program has no rpath), as after an upgrade that
// forgot a library. The live update must relay the loader's message.
int lu_gone_lib_answer(void);
int main(void) { return lu_gone_lib_answer() == 42 ? 0 : 1; }
