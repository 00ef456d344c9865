/* SPDX-License-Identifier: Apache-2.0 */
// A library that lu_needs_gone_lib links against but cannot find at run time.
int lu_gone_lib_answer(void) { return 42; }
