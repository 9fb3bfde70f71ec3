
Bin1Jb<