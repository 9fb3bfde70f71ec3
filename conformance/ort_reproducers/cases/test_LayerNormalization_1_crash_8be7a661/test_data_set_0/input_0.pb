
Bin0Jb<